package dev.rill.compat;

import static org.junit.jupiter.api.Assertions.*;

import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.common.TopicPartitionInfo;
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
}
