package dev.rill.compat;

import static org.junit.jupiter.api.Assertions.*;

import java.net.ServerSocket;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.RaftVoterEndpoint;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.Uuid;
import org.apache.kafka.common.errors.ControllerIdNotRegisteredException;
import org.apache.kafka.common.errors.DuplicateVoterException;
import org.apache.kafka.common.errors.GroupIdNotFoundException;
import org.apache.kafka.common.errors.InvalidRequestException;
import org.apache.kafka.common.errors.TimeoutException;
import org.apache.kafka.common.errors.VoterNotFoundException;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Kafka 4.4's Admin calls on the KRaft quorum, on streams groups and on an emptied share
 * group, with the exception and message a single-node Kafka 4.4 (scripts/kafka-local) gives:
 * the same test passes against it with KAFKA_BOOTSTRAP set. Where Kafka prints the quorum
 * voter's real directory id, rill's voter has none, so only the common part is compared.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class QuorumAndStreamsAdminTest {

    static int node(Admin admin) throws Exception {
        return ClusterAdminTest.ok(admin.describeCluster().nodes()).iterator().next().id();
    }

    @Test
    void controllersAndVotersAreAnsweredAsASingleNodeQuorum() throws Exception {
        try (Admin admin = Admin.create(Broker.props())) {
            int node = node(admin);
            Throwable t = ClusterAdminTest.failure(admin.unregisterController(node + 100).all());
            assertInstanceOf(ControllerIdNotRegisteredException.class, t);
            assertEquals("Controller ID " + (node + 100) + " is not currently registered.", t.getMessage());
            t = ClusterAdminTest.failure(admin.unregisterController(node).all());
            assertInstanceOf(InvalidRequestException.class, t);
            assertEquals("Controller cannot unregister itself while it is active.", t.getMessage());

            Uuid dir = Uuid.fromString("Q2pCbM1zT7u0cDb3pG8Iuw");
            for (int id : new int[] {node + 100, node}) {
                t = ClusterAdminTest.failure(admin.removeRaftVoter(id, dir).all());
                assertInstanceOf(VoterNotFoundException.class, t, "the only voter is not removed either");
                assertTrue(t.getMessage().startsWith("Cannot remove voter ReplicaKey(id=" + id
                        + ", directoryId=Q2pCbM1zT7u0cDb3pG8Iuw) from the set of voters [ReplicaKey(id=" + node
                        + ", directoryId="), t.getMessage());
            }

            t = ClusterAdminTest.failure(admin.addRaftVoter(node, dir,
                    Set.of(new RaftVoterEndpoint("CONTROLLER", "127.0.0.1", 1))).all());
            assertInstanceOf(DuplicateVoterException.class, t);
            int closed;
            try (ServerSocket s = new ServerSocket(0)) {
                closed = s.getLocalPort();
            }
            // The leader asks the new voter's endpoint for its ApiVersions: nobody answers.
            // (Kafka's leader keeps its connection to a voter id it once reached, so this id
            // is one no other test adds.)
            t = ClusterAdminTest.failure(admin.addRaftVoter(node + 200, dir,
                    Set.of(new RaftVoterEndpoint("CONTROLLER", "127.0.0.1", closed))).all());
            assertInstanceOf(TimeoutException.class, t);
            assertEquals("Aborted add voter operation for since API_VERSIONS returned an error BROKER_NOT_AVAILABLE",
                    t.getMessage());
        }
    }

    @Test
    void streamsGroupDescribeKnowsEveryOtherGroupType() throws Exception {
        try (Admin admin = Admin.create(Broker.props())) {
            String topic = TopicConfigsTest.create(admin, "streams-describe", Map.of());
            String consumer = Broker.uniqueTopic("streams-describe-consumer");
            String share = Broker.uniqueTopic("streams-describe-share");
            String unknown = Broker.uniqueTopic("streams-describe-none");
            TopicPartition tp = new TopicPartition(topic, 0);
            ClusterAdminTest.ok(admin.alterConsumerGroupOffsets(consumer, Map.of(tp, new OffsetAndMetadata(0))).all());
            ClusterAdminTest.ok(admin.alterShareGroupOffsets(share, Map.of(tp, 0L)).all());
            for (String g : List.of(consumer, share)) {
                Throwable t = ClusterAdminTest.failure(admin.describeStreamsGroups(List.of(g)).all());
                assertInstanceOf(GroupIdNotFoundException.class, t);
                assertEquals("Group " + g + " is not a streams group.", t.getMessage());
            }
            Throwable t = ClusterAdminTest.failure(admin.describeStreamsGroups(List.of(unknown)).all());
            assertInstanceOf(GroupIdNotFoundException.class, t);
            assertEquals("Group " + unknown + " not found.", t.getMessage());
        }
    }

    @Test
    void aShareGroupWithoutStateIsStillDeletedAsAGroup() throws Exception {
        try (Admin admin = Admin.create(Broker.props())) {
            String topic = TopicConfigsTest.create(admin, "share-emptied", Map.of());
            String group = Broker.uniqueTopic("share-emptied-group");
            ClusterAdminTest.ok(admin.alterShareGroupOffsets(group, Map.of(new TopicPartition(topic, 0), 0L)).all());
            ClusterAdminTest.ok(admin.deleteShareGroupOffsets(group, Set.of(topic)).all());
            var described = ClusterAdminTest.ok(admin.describeShareGroups(List.of(group)).all()).get(group);
            assertEquals("Empty", described.groupState().toString());
            assertEquals(1, described.groupEpoch());
            ClusterAdminTest.ok(admin.deleteShareGroups(List.of(group)).all());
            assertInstanceOf(GroupIdNotFoundException.class,
                    ClusterAdminTest.failure(admin.describeShareGroups(List.of(group)).all()));
            assertInstanceOf(GroupIdNotFoundException.class,
                    ClusterAdminTest.failure(admin.deleteShareGroups(List.of(group)).all()));
        }
    }
}
