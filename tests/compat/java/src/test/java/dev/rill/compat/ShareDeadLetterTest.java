package dev.rill.compat;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.AcknowledgeType;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.KafkaShareConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Rill's dead letters and redelivery backoff (group configs {@code rill.share.dlq.topic},
 * {@code rill.share.redelivery.backoff.ms}; rill only) with the Java {@code KafkaShareConsumer}:
 * a REJECTed record, and one RELEASEd at {@code share.delivery.count.limit}, appear in the
 * dead-letter topic with their own header and the {@code rill-dlq-*} headers; a RELEASEd
 * record comes back no sooner than the backoff and within 10 % of it.
 */
@Timeout(value = 180, unit = TimeUnit.SECONDS)
class ShareDeadLetterTest {
    static final long BACKOFF_MS = 3_000;

    static String header(ConsumerRecord<String, String> r, String name) {
        Header h = r.headers().lastHeader(name);
        return h == null ? null : new String(h.value(), StandardCharsets.UTF_8);
    }

    @Test
    void rejectedAndExhaustedRecordsAreDeadLettersAndReleasesWaitTheBackoff() throws Exception {
        Assumptions.assumeTrue(System.getenv("KAFKA_BOOTSTRAP") == null
                || System.getenv("KAFKA_BOOTSTRAP").isEmpty(), "Rill's dead letters: rill only");
        String bootstrap = Broker.bootstrap();
        String topic = Broker.uniqueTopic("share-dlq");
        String dlq = topic + "-dlq";
        String group = "share-" + topic;
        Properties ap = new Properties();
        ap.put("bootstrap.servers", bootstrap);
        try (Admin admin = Admin.create(ap)) {
            admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1), new NewTopic(dlq, 1, (short) 1)))
                    .all().get(30, TimeUnit.SECONDS);
        }
        ShareGroupsTest.groupConfigs(bootstrap, group, Map.of(
                "share.auto.offset.reset", "earliest",
                "share.delivery.count.limit", "2",
                "rill.share.dlq.topic", dlq,
                "rill.share.redelivery.backoff.ms", Long.toString(BACKOFF_MS),
                "rill.share.redelivery.backoff.max.ms", Long.toString(BACKOFF_MS)));
        try (KafkaProducer<String, String> producer = ShareGroupsTest.producer(bootstrap)) {
            for (String key : List.of("reject", "exhaust", "retry")) {
                ProducerRecord<String, String> r = new ProducerRecord<>(topic, key, "value-" + key);
                r.headers().add("origin", ("test-" + key).getBytes(StandardCharsets.UTF_8));
                producer.send(r);
            }
            producer.flush();
        }
        // key -> delivery count and the time it arrived, per delivery.
        Map<String, Integer> deliveries = new HashMap<>();
        Map<String, Long> releasedAt = new HashMap<>();
        Map<String, Long> waitedMs = new HashMap<>();
        boolean retryAccepted = false;
        try (KafkaShareConsumer<String, String> consumer =
                     new KafkaShareConsumer<>(ShareGroupsTest.consumerProps(bootstrap, group))) {
            consumer.subscribe(List.of(topic));
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            while (!(retryAccepted && deliveries.getOrDefault("exhaust", 0) == 2)
                    && System.nanoTime() < deadline) {
                List<String> released = new java.util.ArrayList<>();
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(50))) {
                    long now = System.nanoTime();
                    int count = r.deliveryCount().orElseThrow();
                    deliveries.put(r.key(), count);
                    Long at = releasedAt.remove(r.key());
                    if (at != null) waitedMs.put(r.key() + count, TimeUnit.NANOSECONDS.toMillis(now - at));
                    switch (r.key()) {
                        case "reject" -> consumer.acknowledge(r, AcknowledgeType.REJECT);
                        case "exhaust" -> {
                            consumer.acknowledge(r, AcknowledgeType.RELEASE);
                            released.add(r.key());
                        }
                        default -> {
                            if (count == 1) {
                                consumer.acknowledge(r, AcknowledgeType.RELEASE);
                                released.add(r.key());
                            } else {
                                consumer.acknowledge(r, AcknowledgeType.ACCEPT);
                                retryAccepted = true;
                            }
                        }
                    }
                }
                consumer.commitSync(Duration.ofSeconds(30));
                long committed = System.nanoTime();
                for (String key : released) releasedAt.put(key, committed);
            }
        }
        assertTrue(retryAccepted, "the released record came back: " + deliveries);
        assertEquals(1, deliveries.get("reject"), "a rejected record is not delivered again");
        assertEquals(2, deliveries.get("exhaust"), "delivered up to the limit");
        System.out.println("share dead letter test: redelivered after " + waitedMs + " (backoff " + BACKOFF_MS + " ms)");
        for (Map.Entry<String, Long> w : waitedMs.entrySet()) {
            assertTrue(w.getValue() >= BACKOFF_MS * 9 / 10 && w.getValue() <= BACKOFF_MS * 11 / 10,
                    "redelivery of " + w.getKey() + " after " + w.getValue() + " ms, backoff " + BACKOFF_MS + " ms");
        }
        assertEquals(2, waitedMs.size(), "two redeliveries timed: " + waitedMs);
        // The dead-letter topic holds the rejected and the exhausted record, with their headers.
        Properties cp = new Properties();
        cp.put("bootstrap.servers", bootstrap);
        cp.put("group.id", "dlq-reader-" + topic);
        cp.put("auto.offset.reset", "earliest");
        cp.put("key.deserializer", StringDeserializer.class.getName());
        cp.put("value.deserializer", StringDeserializer.class.getName());
        Map<String, ConsumerRecord<String, String>> dead = new HashMap<>();
        try (KafkaConsumer<String, String> reader = new KafkaConsumer<>(cp)) {
            reader.subscribe(List.of(dlq));
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (dead.size() < 2 && System.nanoTime() < deadline) {
                for (ConsumerRecord<String, String> r : reader.poll(Duration.ofMillis(200))) {
                    assertNull(dead.put(r.key(), r), "dead letter " + r.key() + " twice");
                }
            }
        }
        assertEquals(java.util.Set.of("reject", "exhaust"), dead.keySet());
        for (ConsumerRecord<String, String> r : dead.values()) {
            assertEquals("value-" + r.key(), r.value());
            assertEquals("test-" + r.key(), header(r, "origin"));
            assertEquals(topic, header(r, "rill-dlq-topic"));
            assertEquals("0", header(r, "rill-dlq-partition"));
            assertEquals(group, header(r, "rill-dlq-group"));
            assertNotNull(header(r, "rill-dlq-offset"));
            assertNotNull(header(r, "rill-dlq-reason"));
        }
        assertEquals("1", header(dead.get("reject"), "rill-dlq-delivery-count"));
        assertEquals("2", header(dead.get("exhaust"), "rill-dlq-delivery-count"));
    }
}
