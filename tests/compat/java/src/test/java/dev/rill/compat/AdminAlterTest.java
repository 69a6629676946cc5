package dev.rill.compat;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.InvalidPartitionsException;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** Admin calls that change a topic, and the Java client's default (idempotent) producer. */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class AdminAlterTest {

    @Test
    void incrementalAlterConfigsThenDescribe() throws Exception {
        String topic = ProduceConsumeTest.createTopic("alter", 1);
        ConfigResource res = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        try (Admin admin = Admin.create(Broker.props())) {
            admin.incrementalAlterConfigs(Map.of(res, List.of(
                    new AlterConfigOp(new ConfigEntry("retention.ms", "123456789"), AlterConfigOp.OpType.SET),
                    new AlterConfigOp(new ConfigEntry("cleanup.policy", "compact"), AlterConfigOp.OpType.SET))))
                    .all().get(30, TimeUnit.SECONDS);
            var cfg = admin.describeConfigs(Set.of(res)).all().get(30, TimeUnit.SECONDS).get(res);
            assertEquals("123456789", cfg.get("retention.ms").value());
            assertEquals("compact", cfg.get("cleanup.policy").value());
            assertEquals(ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, cfg.get("retention.ms").source());

            // DELETE restores the default
            admin.incrementalAlterConfigs(Map.of(res, List.of(
                    new AlterConfigOp(new ConfigEntry("retention.ms", ""), AlterConfigOp.OpType.DELETE))))
                    .all().get(30, TimeUnit.SECONDS);
            cfg = admin.describeConfigs(Set.of(res)).all().get(30, TimeUnit.SECONDS).get(res);
            assertEquals("604800000", cfg.get("retention.ms").value());
            assertNotEquals(ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, cfg.get("retention.ms").source());
        }
    }

    @Test
    void createPartitionsGrowsAndRefusesShrink() throws Exception {
        String topic = ProduceConsumeTest.createTopic("grow", 2);
        try (Admin admin = Admin.create(Broker.props())) {
            admin.createPartitions(Map.of(topic, NewPartitions.increaseTo(4))).all().get(30, TimeUnit.SECONDS);
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (admin.describeTopics(List.of(topic)).allTopicNames().get(30, TimeUnit.SECONDS)
                    .get(topic).partitions().size() != 4) {
                assertTrue(System.nanoTime() < deadline, "partition count never reached 4");
                Thread.sleep(100);
            }
            AdminTest.awaitServing(admin, topic, 4);
            ExecutionException e = assertThrows(ExecutionException.class, () ->
                    admin.createPartitions(Map.of(topic, NewPartitions.increaseTo(3))).all().get(30, TimeUnit.SECONDS));
            assertInstanceOf(InvalidPartitionsException.class, e.getCause());
        }
        try (KafkaProducer<byte[], byte[]> p = ProduceConsumeTest.producer("all", "none")) {
            assertEquals(3, p.send(new ProducerRecord<>(topic, 3, null, "p3".getBytes(StandardCharsets.UTF_8)))
                    .get(30, TimeUnit.SECONDS).partition());
        }
        List<ConsumerRecord<byte[], byte[]>> got = ProduceConsumeTest.consume(topic, 3, 0, 1);
        assertArrayEquals("p3".getBytes(StandardCharsets.UTF_8), got.get(0).value());
    }

    @Test
    void defaultIdempotentProducer() throws Exception {
        String topic = ProduceConsumeTest.createTopic("idem", 1);
        Properties p = Broker.props();
        // Java client defaults: acks=all, enable.idempotence=true (InitProducerId, sequences)
        p.put("linger.ms", "5");
        p.put("max.in.flight.requests.per.connection", "5");
        int n = 2000;
        try (KafkaProducer<byte[], byte[]> prod = new KafkaProducer<>(p, new ByteArraySerializer(), new ByteArraySerializer())) {
            Future<RecordMetadata>[] futs = new Future[n];
            for (int i = 0; i < n; i++) {
                futs[i] = prod.send(new ProducerRecord<>(topic, 0, null, ("i" + i).getBytes(StandardCharsets.UTF_8)));
            }
            prod.flush();
            for (int i = 0; i < n; i++) assertEquals(i, futs[i].get(60, TimeUnit.SECONDS).offset());
        }
        List<ConsumerRecord<byte[], byte[]>> got = ProduceConsumeTest.consume(topic, 0, 0, n);
        for (int i = 0; i < n; i++) {
            assertEquals(i, got.get(i).offset());
            assertArrayEquals(("i" + i).getBytes(StandardCharsets.UTF_8), got.get(i).value());
        }
    }
}
