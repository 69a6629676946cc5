package dev.rill.compat;

import static org.junit.jupiter.api.Assertions.*;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicReference;
import java.io.BufferedReader;
import java.io.File;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.Collection;
import java.util.HashSet;
import java.util.Set;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.clients.consumer.AcknowledgeType;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaShareConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * KIP-932 share groups with the Java {@code KafkaShareConsumer} (explicit acknowledgement):
 * four consumers on one partition share 10 000 records, each accepted exactly once across
 * them; every tenth record is released on its first delivery and accepted on its second, with
 * the delivery count the client reports.
 *
 * <p>The group starts at the latest offset ({@code share.auto.offset.reset} default), so the
 * test first produces warm-up records until a consumer sees one: from then on every record is
 * in the share-partition, with Kafka and with rill alike.
 */
@Timeout(value = 300, unit = TimeUnit.SECONDS)
class ShareGroupsTest {
    static final int RECORDS = 10_000;

    static Properties consumerProps(String bootstrap, String group) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("group.id", group);
        p.put("key.deserializer", StringDeserializer.class.getName());
        p.put("value.deserializer", StringDeserializer.class.getName());
        p.put("share.acknowledgement.mode", "explicit");
        p.put("max.poll.records", "200");
        return p;
    }

    static KafkaProducer<String, String> producer(String bootstrap) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("key.serializer", StringSerializer.class.getName());
        p.put("value.serializer", StringSerializer.class.getName());
        p.put("linger.ms", "5");
        return new KafkaProducer<>(p);
    }

    static void createTopic(String bootstrap, String topic) throws Exception {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        try (Admin admin = Admin.create(p)) {
            admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all().get(30, TimeUnit.SECONDS);
        }
    }

    /** Produces warm-up records (key "w") until `seen` turns true, at most 60 s. */
    static void warmUp(KafkaProducer<String, String> producer, String topic, AtomicBoolean seen) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        while (!seen.get()) {
            assertTrue(System.nanoTime() < deadline, "no consumer received a warm-up record in 60 s");
            producer.send(new ProducerRecord<>(topic, "w", "warm-up")).get();
            Thread.sleep(200);
        }
    }

    @Test
    void fourConsumersShareOnePartitionWithReleasesAndDeliveryCounts() throws Exception {
        String bootstrap = Broker.bootstrap();
        String topic = Broker.uniqueTopic("share");
        String group = "share-" + topic;
        createTopic(bootstrap, topic);
        AtomicBoolean warm = new AtomicBoolean();
        AtomicBoolean stop = new AtomicBoolean();
        AtomicReference<Throwable> failure = new AtomicReference<>();
        // key -> "consumer:deliveryCount" of its acceptance; a second acceptance is a failure.
        Map<String, String> accepted = new ConcurrentHashMap<>();
        Map<String, Integer> released = new ConcurrentHashMap<>();
        int[] perConsumer = new int[4];
        List<Thread> threads = new ArrayList<>();
        for (int c = 0; c < 4; c++) {
            final int id = c;
            Thread t = new Thread(() -> {
                try (KafkaShareConsumer<String, String> consumer =
                             new KafkaShareConsumer<>(consumerProps(bootstrap, group))) {
                    consumer.subscribe(List.of(topic));
                    while (!stop.get()) {
                        ConsumerRecords<String, String> records = consumer.poll(Duration.ofMillis(200));
                        for (ConsumerRecord<String, String> r : records) {
                            short count = r.deliveryCount().orElseThrow();
                            if (r.key().equals("w")) {
                                warm.set(true);
                                consumer.acknowledge(r, AcknowledgeType.ACCEPT);
                                continue;
                            }
                            int n = Integer.parseInt(r.key());
                            if (n % 10 == 0 && count == 1) {
                                released.merge(r.key(), 1, Integer::sum);
                                consumer.acknowledge(r, AcknowledgeType.RELEASE);
                                continue;
                            }
                            String previous = accepted.putIfAbsent(r.key(), id + ":" + count);
                            if (previous != null) {
                                throw new AssertionError("record " + r.key() + " accepted twice: " + previous
                                        + " and " + id + ":" + count);
                            }
                            synchronized (perConsumer) {
                                perConsumer[id]++;
                            }
                            consumer.acknowledge(r, AcknowledgeType.ACCEPT);
                        }
                        if (!records.isEmpty()) {
                            consumer.commitSync(Duration.ofSeconds(30));
                        }
                    }
                } catch (Throwable e) {
                    failure.compareAndSet(null, e);
                }
            }, "share-consumer-" + c);
            threads.add(t);
            t.start();
        }
        try (KafkaProducer<String, String> producer = producer(bootstrap)) {
            warmUp(producer, topic, warm);
            for (int i = 0; i < RECORDS; i++) {
                producer.send(new ProducerRecord<>(topic, Integer.toString(i), "v" + i));
            }
            producer.flush();
        }
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(180);
        while (accepted.size() < RECORDS && failure.get() == null && System.nanoTime() < deadline) {
            Thread.sleep(100);
        }
        stop.set(true);
        for (Thread t : threads) {
            t.join(60_000);
        }
        if (failure.get() != null) {
            throw new AssertionError("a consumer failed", failure.get());
        }
        assertEquals(RECORDS, accepted.size(), "records accepted");
        for (int i = 0; i < RECORDS; i++) {
            String key = Integer.toString(i);
            String how = accepted.get(key);
            assertNotNull(how, "record " + i + " never accepted");
            int count = Integer.parseInt(how.substring(how.indexOf(':') + 1));
            if (i % 10 == 0) {
                assertEquals(1, released.getOrDefault(key, 0), "record " + i + " released once");
                assertEquals(2, count, "record " + i + " accepted on its second delivery");
            } else {
                assertEquals(1, count, "record " + i + " accepted on its first delivery");
            }
        }
        int busy = 0;
        for (int n : perConsumer) {
            if (n > 0) busy++;
        }
        assertTrue(busy >= 2, "records spread over consumers: " + java.util.Arrays.toString(perConsumer));
    }

    /** Sets group configs (GROUP resource) of `group`. */
    static void groupConfigs(String bootstrap, String group, Map<String, String> configs) throws Exception {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        try (Admin admin = Admin.create(p)) {
            ConfigResource resource = new ConfigResource(ConfigResource.Type.GROUP, group);
            Collection<AlterConfigOp> ops = new ArrayList<>();
            configs.forEach((k, v) -> ops.add(new AlterConfigOp(new ConfigEntry(k, v), AlterConfigOp.OpType.SET)));
            admin.incrementalAlterConfigs(Map.of(resource, ops)).all().get(30, TimeUnit.SECONDS);
        }
    }

    /**
     * A consumer (its own JVM) acquires records and is SIGKILLed holding them: once its
     * connection closes (at the latest when their 15 s lock ends) they are delivered to another
     * consumer with delivery count 2, and every record is accepted once.
     */
    @Test
    void recordsOfAKilledConsumerAreRedeliveredAfterTheLock() throws Exception {
        String bootstrap = Broker.bootstrap();
        String topic = Broker.uniqueTopic("share-kill");
        String group = "share-" + topic;
        createTopic(bootstrap, topic);
        groupConfigs(bootstrap, group, Map.of("share.auto.offset.reset", "earliest",
                "share.record.lock.duration.ms", "15000"));
        int total = 200;
        try (KafkaProducer<String, String> producer = producer(bootstrap)) {
            for (int i = 0; i < total; i++) {
                producer.send(new ProducerRecord<>(topic, Integer.toString(i), "v" + i));
            }
            producer.flush();
        }
        String cp = System.getProperty("surefire.test.class.path", System.getProperty("java.class.path"));
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        Process worker = new ProcessBuilder(java, "-Xmx128m", "-XX:TieredStopAtLevel=1", "-cp", cp,
                "dev.rill.compat.ShareWorker", bootstrap, group, topic)
                .redirectError(ProcessBuilder.Redirect.DISCARD)
                .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")))
                .start();
        Set<String> held = new HashSet<>();
        try {
            BufferedReader out = new BufferedReader(new InputStreamReader(worker.getInputStream(), StandardCharsets.UTF_8));
            String line = out.readLine();
            assertNotNull(line, "worker printed nothing");
            assertTrue(line.startsWith("ACQUIRED "), line);
            held.addAll(List.of(line.substring("ACQUIRED ".length()).split(",")));
        } finally {
            worker.destroyForcibly();  // SIGKILL
            worker.waitFor(10, TimeUnit.SECONDS);
        }
        long killedAt = System.nanoTime();
        Map<String, Short> accepted = new ConcurrentHashMap<>();
        try (KafkaShareConsumer<String, String> consumer = new KafkaShareConsumer<>(consumerProps(bootstrap, group))) {
            consumer.subscribe(List.of(topic));
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(90);
            while (accepted.size() < total && System.nanoTime() < deadline) {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(500))) {
                    short count = r.deliveryCount().orElseThrow();
                    assertNull(accepted.put(r.key(), count), "record " + r.key() + " accepted twice");
                    consumer.acknowledge(r, AcknowledgeType.ACCEPT);
                }
                consumer.commitSync(Duration.ofSeconds(30));
            }
        }
        assertEquals(total, accepted.size(), "every record accepted once");
        assertFalse(held.isEmpty());
        for (String key : held) {
            assertEquals((short) 2, accepted.get(key), "record " + key + " redelivered after the kill");
        }
        for (Map.Entry<String, Short> e : accepted.entrySet()) {
            if (!held.contains(e.getKey())) assertEquals((short) 1, e.getValue(), "record " + e.getKey());
        }
        // Kafka 4.4 and rill release a member's records when its connection closes, not when
        // their lock ends (Kafka 5.7 s here, most of it the new consumer joining; rill 0.4-0.5 s;
        // crates/broker/tests/share_groups.rs checks the release on close exactly). The bound
        // here is the lock plus the new consumer's start, so a slow join on a loaded machine
        // does not fail the test.
        long waitedMs = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - killedAt);
        System.out.println("share kill test: held records accepted again " + waitedMs + " ms after the kill");
        assertTrue(waitedMs <= 15_000 + 30_000, "held records came back by the lock's end: " + waitedMs + " ms");
    }
}
