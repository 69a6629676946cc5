package dev.rill.compat;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Delayed delivery (rill.delivery.delayed.enable) through the Java client: records produced
 * with rill-delay-ms / rill-deliver-at headers reach a plain consumer once each, in due-time
 * order, no earlier than due, with the delivery headers. Rill only.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class DelayedTest {

    static String header(ConsumerRecord<byte[], byte[]> r, String key) {
        Header h = r.headers().lastHeader(key);
        return h == null ? null : new String(h.value(), StandardCharsets.UTF_8);
    }

    @Test
    void delayHeadersDeliverInDueOrderNoEarlierThanDue() throws Exception {
        Assumptions.assumeTrue(System.getenv("KAFKA_BOOTSTRAP") == null, "delayed delivery is a rill feature");
        String topic = Broker.uniqueTopic("delayed");
        try (Admin admin = Admin.create(Broker.props())) {
            NewTopic t = new NewTopic(topic, 1, (short) 1).configs(Map.of("rill.delivery.delayed.enable", "true"));
            admin.createTopics(List.of(t)).all().get(30, TimeUnit.SECONDS);
            AdminTest.awaitTopic(admin, topic, true);
            AdminTest.awaitServing(admin, topic, 1);
        }
        int n = 200;
        Map<String, Long> earliest = new HashMap<>();
        try (KafkaProducer<byte[], byte[]> p = ProduceConsumeTest.producer("all", "lz4")) {
            for (int i = 0; i < n; i++) {
                String value = "j" + i;
                long now = System.currentTimeMillis();
                RecordHeader h;
                if (i % 2 == 0) {
                    long delay = (i * 7919L) % 900;
                    earliest.put(value, now + delay);
                    h = new RecordHeader("rill-delay-ms", Long.toString(delay).getBytes(StandardCharsets.UTF_8));
                } else {
                    long at = now + (i * 104729L) % 900;
                    earliest.put(value, at);
                    h = new RecordHeader("rill-deliver-at", Long.toString(at).getBytes(StandardCharsets.UTF_8));
                }
                p.send(new ProducerRecord<>(topic, 0, null, null, value.getBytes(StandardCharsets.UTF_8), List.of(h))).get();
            }
        }
        List<ConsumerRecord<byte[], byte[]>> got = ProduceConsumeTest.consume(topic, 0, 0, n);
        Set<String> seen = new HashSet<>();
        long previous = Long.MIN_VALUE;
        for (ConsumerRecord<byte[], byte[]> r : got) {
            String value = new String(r.value(), StandardCharsets.UTF_8);
            assertTrue(seen.add(value), "duplicate " + value);
            long due = Long.parseLong(header(r, "rill-delayed-deliver-at"));
            assertTrue(due >= earliest.get(value), value + " due " + due + " before " + earliest.get(value));
            assertTrue(r.timestamp() >= due, value + " delivered at " + r.timestamp() + ", due " + due);
            assertTrue(due >= previous, "due-time order at " + value);
            previous = due;
            assertNotNull(header(r, "rill-delayed-produce-timestamp"));
        }
        assertEquals(n, seen.size());
    }
}
