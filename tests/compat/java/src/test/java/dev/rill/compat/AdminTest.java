package dev.rill.compat;

import static org.junit.jupiter.api.Assertions.*;

import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.DescribeClusterOptions;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.DescribeConsumerGroupsOptions;
import org.apache.kafka.clients.admin.DescribeTopicsOptions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

@Timeout(value = 120, unit = TimeUnit.SECONDS)
class AdminTest {

    static void awaitTopic(Admin admin, String topic, boolean present) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (System.nanoTime() < deadline) {
            if (admin.listTopics().names().get(30, TimeUnit.SECONDS).contains(topic) == present) return;
            Thread.sleep(100);
        }
        fail("topic " + topic + (present ? " never appeared" : " never disappeared"));
    }

    /**
     * Metadata can name a leader before that leader serves the partition; an acks=0 produce
     * sent in that window is dropped silently (acks=0 semantics). Wait until ListOffsets answers.
     */
    static void awaitServing(Admin admin, String topic, int partitions) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        Map<org.apache.kafka.common.TopicPartition, org.apache.kafka.clients.admin.OffsetSpec> req = new java.util.HashMap<>();
        for (int i = 0; i < partitions; i++)
            req.put(new org.apache.kafka.common.TopicPartition(topic, i), org.apache.kafka.clients.admin.OffsetSpec.latest());
        while (true) {
            try {
                admin.listOffsets(req).all().get(10, TimeUnit.SECONDS);
                return;
            } catch (ExecutionException e) {
                if (System.nanoTime() > deadline) throw e;
                Thread.sleep(100);
            }
        }
    }

    @Test
    void createDescribeDeleteTopics() throws Exception {
        String topic = Broker.uniqueTopic("admin");
        try (Admin admin = Admin.create(Broker.props())) {
            DescribeClusterResult cluster = admin.describeCluster();
            assertFalse(cluster.nodes().get(30, TimeUnit.SECONDS).isEmpty());
            assertNotNull(cluster.clusterId().get(30, TimeUnit.SECONDS));

            admin.createTopics(List.of(new NewTopic(topic, 3, (short) 1)
                    .configs(Map.of("retention.ms", "7200000")))).all().get(30, TimeUnit.SECONDS);
            awaitTopic(admin, topic, true);

            TopicDescription d = admin.describeTopics(List.of(topic)).allTopicNames().get(30, TimeUnit.SECONDS).get(topic);
            assertEquals(topic, d.name());
            assertFalse(d.isInternal());
            assertEquals(3, d.partitions().size());
            for (int i = 0; i < 3; i++) {
                TopicPartitionInfo p = d.partitions().get(i);
                assertEquals(i, p.partition());
                assertNotNull(p.leader());
                assertEquals(List.of(p.leader()), p.replicas());
                assertEquals(List.of(p.leader()), p.isr());
            }

            ExecutionException dup = assertThrows(ExecutionException.class,
                    () -> admin.createTopics(List.of(new NewTopic(topic, 3, (short) 1))).all().get(30, TimeUnit.SECONDS));
            assertInstanceOf(TopicExistsException.class, dup.getCause());

            admin.deleteTopics(List.of(topic)).all().get(30, TimeUnit.SECONDS);
            awaitTopic(admin, topic, false);

            ExecutionException gone = assertThrows(ExecutionException.class,
                    () -> admin.describeTopics(List.of(topic)).allTopicNames().get(30, TimeUnit.SECONDS));
            assertInstanceOf(UnknownTopicOrPartitionException.class, gone.getCause());
        }
    }

    @Test
    void describeTopicConfigs() throws Exception {
        String topic = Broker.uniqueTopic("configs");
        try (Admin admin = Admin.create(Broker.props())) {
            admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1)
                    .configs(Map.of("retention.ms", "3600000", "cleanup.policy", "delete",
                            "segment.bytes", "1048576")))).all().get(30, TimeUnit.SECONDS);
            awaitTopic(admin, topic, true);
            ConfigResource res = new ConfigResource(ConfigResource.Type.TOPIC, topic);
            Config cfg = admin.describeConfigs(Set.of(res)).all().get(30, TimeUnit.SECONDS).get(res);
            assertEquals("3600000", cfg.get("retention.ms").value());
            assertEquals("delete", cfg.get("cleanup.policy").value());
            assertEquals("1048576", cfg.get("segment.bytes").value());
            admin.deleteTopics(List.of(topic)).all().get(30, TimeUnit.SECONDS);
        }
    }

    @Test
    void createTopicWithDefaultPartitions() throws Exception {
        String topic = Broker.uniqueTopic("defaults");
        try (Admin admin = Admin.create(Broker.props())) {
            admin.createTopics(List.of(new NewTopic(topic, java.util.Optional.empty(), java.util.Optional.empty())))
                    .all().get(30, TimeUnit.SECONDS);
            awaitTopic(admin, topic, true);
            TopicDescription d = admin.describeTopics(List.of(topic)).allTopicNames().get(30, TimeUnit.SECONDS).get(topic);
            assertTrue(d.partitions().size() >= 1);
            admin.deleteTopics(List.of(topic)).all().get(30, TimeUnit.SECONDS);
        }
    }

    /**
     * With no authorizer configured, Kafka answers "authorized operations" with every operation
     * the resource type supports; tools gate their UI on these sets.
     */
    @Test
    void authorizedOperationsWithoutAnAuthorizer() throws Exception {
        String topic = Broker.uniqueTopic("authops");
        try (Admin admin = Admin.create(Broker.props())) {
            admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all().get(30, TimeUnit.SECONDS);
            awaitTopic(admin, topic, true);
            Set<AclOperation> cluster = admin.describeCluster(new DescribeClusterOptions().includeAuthorizedOperations(true))
                    .authorizedOperations().get(30, TimeUnit.SECONDS);
            assertEquals(Set.of(AclOperation.CREATE, AclOperation.CLUSTER_ACTION, AclOperation.DESCRIBE_CONFIGS,
                    AclOperation.ALTER_CONFIGS, AclOperation.IDEMPOTENT_WRITE, AclOperation.ALTER, AclOperation.DESCRIBE),
                    cluster);
            TopicDescription d = admin.describeTopics(List.of(topic), new DescribeTopicsOptions().includeAuthorizedOperations(true))
                    .allTopicNames().get(30, TimeUnit.SECONDS).get(topic);
            assertEquals(Set.of(AclOperation.READ, AclOperation.WRITE, AclOperation.CREATE, AclOperation.DESCRIBE,
                    AclOperation.DELETE, AclOperation.ALTER, AclOperation.DESCRIBE_CONFIGS, AclOperation.ALTER_CONFIGS),
                    d.authorizedOperations());
            // A group that exists (committed offsets, no members): Kafka 4.4 answers an unknown
            // group with GROUP_ID_NOT_FOUND from DescribeGroups v6.
            String group = Broker.uniqueTopic("authops-group");
            admin.alterConsumerGroupOffsets(group, Map.of(new org.apache.kafka.common.TopicPartition(topic, 0),
                    new org.apache.kafka.clients.consumer.OffsetAndMetadata(0))).all().get(30, TimeUnit.SECONDS);
            Set<AclOperation> groupOps = admin.describeConsumerGroups(List.of(group),
                    new DescribeConsumerGroupsOptions().includeAuthorizedOperations(true))
                    .describedGroups().get(group).get(30, TimeUnit.SECONDS).authorizedOperations();
            assertEquals(Set.of(AclOperation.READ, AclOperation.DESCRIBE, AclOperation.DELETE,
                    AclOperation.DESCRIBE_CONFIGS, AclOperation.ALTER_CONFIGS), groupOps);
            admin.deleteTopics(List.of(topic)).all().get(30, TimeUnit.SECONDS);
        }
    }

    /** describeTopics pages through DescribeTopicPartitions when a response holds few partitions. */
    @Test
    void describeTopicsPagesThroughPartitions() throws Exception {
        String a = Broker.uniqueTopic("pages-a");
        String b = Broker.uniqueTopic("pages-b");
        try (Admin admin = Admin.create(Broker.props())) {
            admin.createTopics(List.of(new NewTopic(a, 5, (short) 1), new NewTopic(b, 3, (short) 1)))
                    .all().get(30, TimeUnit.SECONDS);
            awaitTopic(admin, a, true);
            awaitTopic(admin, b, true);
            Map<String, TopicDescription> all = admin.describeTopics(List.of(a, b),
                    new DescribeTopicsOptions().partitionSizeLimitPerResponse(2)).allTopicNames().get(30, TimeUnit.SECONDS);
            assertEquals(5, all.get(a).partitions().size());
            assertEquals(3, all.get(b).partitions().size());
            for (int i = 0; i < 5; i++) assertEquals(i, all.get(a).partitions().get(i).partition());
            admin.deleteTopics(List.of(a, b)).all().get(30, TimeUnit.SECONDS);
        }
    }
}
