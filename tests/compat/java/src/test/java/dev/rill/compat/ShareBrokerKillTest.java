package dev.rill.compat;

import static org.junit.jupiter.api.Assertions.*;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.kafka.clients.consumer.AcknowledgeType;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaShareConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicIdPartition;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Rill only: four {@code KafkaShareConsumer}s work through 2 000 records on one partition and
 * the broker is SIGKILLed mid-run, then restarted on the same port and data directory. A
 * ledger keeps every delivery of every record and which acceptances the broker confirmed
 * (commitSync answered without an error): afterwards every record was accepted (nothing
 * lost), no record was delivered again after its acceptance was confirmed (nothing accepted
 * redelivered), and each redelivery of a record carries a higher delivery count than the
 * delivery before it.
 */
@Timeout(value = 240, unit = TimeUnit.SECONDS)
class ShareBrokerKillTest {
    static final int RECORDS = 2_000;

    @Test
    void aBrokerKilledMidRunLosesNothingAndRedeliversNothingAccepted() throws Exception {
        Assumptions.assumeTrue(System.getenv("KAFKA_BOOTSTRAP") == null
                || System.getenv("KAFKA_BOOTSTRAP").isEmpty(), "kills the broker: rill only");
        Broker.Started rill = Broker.start();
        try {
            rill = run(rill);
        } finally {
            rill.stop();
        }
    }

    private Broker.Started run(Broker.Started rill) throws Exception {
        String bootstrap = rill.address();
        String topic = Broker.uniqueTopic("share-broker-kill");
        String group = "share-" + topic;
        ShareGroupsTest.createTopic(bootstrap, topic);
        ShareGroupsTest.groupConfigs(bootstrap, group, Map.of("share.auto.offset.reset", "earliest"));
        try (KafkaProducer<String, String> producer = ShareGroupsTest.producer(bootstrap)) {
            for (int i = 0; i < RECORDS; i++) {
                producer.send(new ProducerRecord<>(topic, Integer.toString(i), "v" + i));
            }
            producer.flush();
        }
        // key -> delivery counts in the order the consumers got them.
        Map<String, List<Short>> deliveries = new ConcurrentHashMap<>();
        Set<String> confirmed = ConcurrentHashMap.newKeySet();
        List<String> violations = java.util.Collections.synchronizedList(new ArrayList<>());
        AtomicBoolean stop = new AtomicBoolean();
        AtomicReference<Throwable> failure = new AtomicReference<>();
        List<Thread> threads = new ArrayList<>();
        for (int c = 0; c < 4; c++) {
            Thread t = new Thread(() -> consume(bootstrap, group, topic, stop, deliveries, confirmed,
                    violations, failure), "share-consumer-" + c);
            threads.add(t);
            t.start();
        }
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        while (confirmed.size() < RECORDS / 4 && System.nanoTime() < deadline && failure.get() == null) {
            Thread.sleep(20);
        }
        assertTrue(confirmed.size() >= RECORDS / 4, "a quarter accepted before the kill: " + confirmed.size());
        int beforeKill = confirmed.size();
        rill = rill.killAndRestart();
        System.out.println("share broker kill test: killed with " + beforeKill + " of " + RECORDS
                + " accepted; restarted on " + rill.address());
        deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(150);
        while (confirmed.size() < RECORDS && System.nanoTime() < deadline && failure.get() == null) {
            Thread.sleep(100);
        }
        stop.set(true);
        for (Thread t : threads) {
            t.join(60_000);
        }
        if (failure.get() != null) {
            throw new AssertionError("a consumer failed", failure.get());
        }
        assertTrue(beforeKill < RECORDS, "the kill came mid-run");
        assertEquals(List.of(), violations.subList(0, Math.min(10, violations.size())));
        for (int i = 0; i < RECORDS; i++) {
            assertTrue(confirmed.contains(Integer.toString(i)), "record " + i + " never accepted");
        }
        long redelivered = deliveries.values().stream().filter(d -> d.size() > 1).count();
        System.out.println("share broker kill test: " + redelivered + " records delivered more than once");
        return rill;
    }

    /** One consumer: accepts every record, records the ledger, until `stop`. */
    private static void consume(String bootstrap, String group, String topic, AtomicBoolean stop,
                                Map<String, List<Short>> deliveries, Set<String> confirmed,
                                List<String> violations, AtomicReference<Throwable> failure) {
        java.util.Properties props = ShareGroupsTest.consumerProps(bootstrap, group);
        props.put("reconnect.backoff.max.ms", "500");
        props.put("max.poll.records", "50");
        try (KafkaShareConsumer<String, String> consumer = new KafkaShareConsumer<>(props)) {
            consumer.subscribe(List.of(topic));
            while (!stop.get()) {
                ConsumerRecords<String, String> records;
                try {
                    records = consumer.poll(Duration.ofMillis(200));
                } catch (KafkaException e) {
                    continue;  // the broker is down or restarting
                }
                List<String> keys = new ArrayList<>();
                for (ConsumerRecord<String, String> r : records) {
                    short count = r.deliveryCount().orElseThrow();
                    String key = r.key();
                    if (confirmed.contains(key)) {
                        violations.add("record " + key + " delivered (count " + count + ") after its acceptance was confirmed");
                    }
                    List<Short> seen = deliveries.computeIfAbsent(key, k -> java.util.Collections.synchronizedList(new ArrayList<>()));
                    if (!seen.isEmpty() && seen.get(seen.size() - 1) >= count) {
                        violations.add("record " + key + " delivered with count " + count + " after " + seen);
                    }
                    seen.add(count);
                    keys.add(key);
                    Thread.sleep(2);  // some work per record, so the kill lands mid-run
                    consumer.acknowledge(r, AcknowledgeType.ACCEPT);
                }
                if (keys.isEmpty()) continue;
                Map<TopicIdPartition, Optional<KafkaException>> result;
                try {
                    result = consumer.commitSync(Duration.ofSeconds(30));
                } catch (KafkaException e) {
                    continue;  // not confirmed: these records may come again
                }
                if (result.values().stream().allMatch(Optional::isEmpty) && !result.isEmpty()) {
                    confirmed.addAll(keys);
                }
            }
        } catch (Throwable e) {
            failure.compareAndSet(null, e);
        }
    }
}
