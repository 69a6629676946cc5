package dev.rill.compat;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.DescribeConfigsOptions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.InvalidConfigurationException;
import org.apache.kafka.common.errors.InvalidTimestampException;
import org.apache.kafka.common.errors.RecordTooLargeException;
import org.apache.kafka.common.record.TimestampType;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Every topic config of Kafka 4.4 through the Java Admin client: created, described, altered
 * (SET, DELETE, APPEND/SUBTRACT on lists) and reset, with the effects a Java client can see
 * (LogAppendTime, the timestamp bounds, max.message.bytes). The keys and Kafka's answers come
 * from the recorded fixture crates/broker/tests/fixtures/kafka-topic-configs.tsv
 * (scripts/record-kafka-configs); run with KAFKA_BOOTSTRAP set, the same test checks Kafka
 * itself, so the fixture and the expectations stay Kafka's. compression.type's effect (the
 * batch codec) is not visible to a Java consumer and is checked in
 * crates/broker/tests/topic_configs.rs.
 */
@Timeout(value = 300, unit = TimeUnit.SECONDS)
class TopicConfigsTest {

    /** Kafka's answer for one config of a topic without overrides, as recorded. */
    record Recorded(String value, String source, boolean readOnly, boolean sensitive, String type,
                    List<String> synonyms, String doc) {}

    /** A valid value and a second one for each key (neither the default). */
    private static final Map<String, String[]> VALUES = new TreeMap<>(Map.ofEntries(
            Map.entry("cleanup.policy", new String[] {"compact", "compact,delete"}),
            Map.entry("compression.gzip.level", new String[] {"5", "9"}),
            Map.entry("compression.lz4.level", new String[] {"4", "10"}),
            Map.entry("compression.type", new String[] {"lz4", "zstd"}),
            Map.entry("compression.zstd.level", new String[] {"5", "10"}),
            Map.entry("delete.retention.ms", new String[] {"1000", "2000"}),
            Map.entry("errors.deadletterqueue.group.enable", new String[] {"true", "true"}),
            Map.entry("file.delete.delay.ms", new String[] {"1000", "2000"}),
            Map.entry("flush.messages", new String[] {"1000", "2000"}),
            Map.entry("flush.ms", new String[] {"1000", "2000"}),
            Map.entry("follower.replication.throttled.replicas", new String[] {"0:1", "*"}),
            Map.entry("index.interval.bytes", new String[] {"8192", "1024"}),
            Map.entry("leader.replication.throttled.replicas", new String[] {"*", "0:1"}),
            Map.entry("local.retention.bytes", new String[] {"1000000", "2000000"}),
            Map.entry("local.retention.ms", new String[] {"1000000", "2000000"}),
            Map.entry("max.compaction.lag.ms", new String[] {"100000", "200000"}),
            Map.entry("max.decompressed.message.bytes", new String[] {"1048576", "2097152"}),
            Map.entry("max.message.bytes", new String[] {"100000", "200000"}),
            Map.entry("message.timestamp.after.max.ms", new String[] {"60000", "120000"}),
            Map.entry("message.timestamp.before.max.ms", new String[] {"60000", "120000"}),
            Map.entry("message.timestamp.type", new String[] {"LogAppendTime", "LogAppendTime"}),
            Map.entry("min.cleanable.dirty.ratio", new String[] {"0.25", "0.75"}),
            Map.entry("min.compaction.lag.ms", new String[] {"1000", "2000"}),
            Map.entry("min.insync.replicas", new String[] {"2", "3"}),
            Map.entry("preallocate", new String[] {"true", "true"}),
            Map.entry("remote.copy.lag.bytes", new String[] {"1000", "2000"}),
            Map.entry("remote.copy.lag.ms", new String[] {"1000", "2000"}),
            Map.entry("remote.log.copy.disable", new String[] {"true", "true"}),
            Map.entry("remote.log.delete.on.disable", new String[] {"true", "true"}),
            Map.entry("retention.bytes", new String[] {"1000000", "2000000"}),
            Map.entry("retention.ms", new String[] {"3600000", "7200000"}),
            Map.entry("segment.bytes", new String[] {"1048576", "2097152"}),
            Map.entry("segment.index.bytes", new String[] {"1048576", "2097152"}),
            Map.entry("segment.jitter.ms", new String[] {"1000", "2000"}),
            Map.entry("segment.ms", new String[] {"3600000", "7200000"}),
            Map.entry("unclean.leader.election.enable", new String[] {"true", "true"})));

    /** Keys that need a part of Kafka a single node without tiered storage does not run. */
    private static final Set<String> REFUSED_WHEN_SET = Set.of("remote.storage.enable");

    private static final long CALL_S = 30;

    static boolean againstKafka() {
        String ext = System.getenv("KAFKA_BOOTSTRAP");
        return ext != null && !ext.isEmpty();
    }

    static String unescape(String v) {
        if (v.equals("\\N")) return null;
        StringBuilder b = new StringBuilder();
        for (int i = 0; i < v.length(); i++) {
            char c = v.charAt(i);
            if (c == '%' && i + 3 <= v.length()) {
                b.append((char) Integer.parseInt(v.substring(i + 1, i + 3), 16));
                i += 2;
            } else {
                b.append(c);
            }
        }
        return b.toString();
    }

    static Map<String, Recorded> fixture() throws Exception {
        Path path = Path.of(System.getProperty("rill.repo", "../../.."),
                "crates/broker/tests/fixtures/kafka-topic-configs.tsv");
        Map<String, Recorded> out = new TreeMap<>();
        for (String line : Files.readAllLines(path, StandardCharsets.UTF_8)) {
            String[] f = line.split("\t", -1);
            assertEquals(9, f.length, line);
            List<String> synonyms = new ArrayList<>();
            for (String s : f[7].split(";")) {
                if (s.isEmpty()) continue;
                int eq = s.indexOf('=');
                int at = s.lastIndexOf('@');
                synonyms.add(synonym(unescape(s.substring(0, eq)), unescape(s.substring(eq + 1, at)), s.substring(at + 1)));
            }
            out.put(unescape(f[1]), new Recorded(unescape(f[2]), f[3], f[4].equals("true"), f[5].equals("true"),
                    f[6], synonyms, unescape(f[8])));
        }
        assertTrue(out.size() >= 37, "the fixture holds Kafka's topic configs");
        return out;
    }

    static String synonym(String name, String value, String source) {
        return name + "=" + value + "@" + source;
    }

    static List<String> synonyms(ConfigEntry e) {
        List<String> out = new ArrayList<>();
        for (ConfigEntry.ConfigSynonym s : e.synonyms()) out.add(synonym(s.name(), s.value(), s.source().toString()));
        return out;
    }

    static Config describe(Admin admin, String topic) throws Exception {
        ConfigResource res = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        DescribeConfigsOptions o = new DescribeConfigsOptions().includeSynonyms(true).includeDocumentation(true);
        return admin.describeConfigs(Set.of(res), o).all().get(CALL_S, TimeUnit.SECONDS).get(res);
    }

    /**
     * The entry of `name` once it shows `value`, or the last one seen after 15 s: Kafka's
     * brokers see an altered config when the controller's record reaches them, a moment
     * after the alter call returns (rill answers at once).
     */
    static ConfigEntry describeUntil(Admin admin, String topic, String name, String value) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(15);
        while (true) {
            ConfigEntry e = describe(admin, topic).get(name);
            if (java.util.Objects.equals(e.value(), value) || System.nanoTime() > deadline) return e;
            Thread.sleep(50);
        }
    }

    static void alter(Admin admin, String topic, String key, String value, AlterConfigOp.OpType op) throws Exception {
        ConfigResource res = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        admin.incrementalAlterConfigs(Map.of(res, List.of(new AlterConfigOp(new ConfigEntry(key, value), op))))
                .all().get(CALL_S, TimeUnit.SECONDS);
    }

    static String create(Admin admin, String prefix, Map<String, String> configs) throws Exception {
        String topic = Broker.uniqueTopic(prefix);
        admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1).configs(configs))).all().get(CALL_S, TimeUnit.SECONDS);
        AdminTest.awaitTopic(admin, topic, true);
        return topic;
    }

    /**
     * A topic without overrides, described field by field as the recorded Kafka 4.4 answer.
     * Where the recording broker's setup decided a value (scripts/kafka-local sets
     * message.max.bytes; KRaft keeps min.insync.replicas as a cluster default), rill, which has
     * neither, must answer what Kafka's DEFAULT_CONFIG synonym says; Kafka answers as recorded.
     */
    @Test
    void describeMatchesKafkasRecordingFieldByField() throws Exception {
        Map<String, Recorded> kafka = fixture();
        try (Admin admin = Admin.create(Broker.props())) {
            String topic = create(admin, "cfg-plain", Map.of());
            Map<String, ConfigEntry> live = new TreeMap<>();
            for (ConfigEntry e : describe(admin, topic).entries()) live.put(e.name(), e);
            for (var k : kafka.entrySet()) {
                String name = k.getKey();
                Recorded r = k.getValue();
                ConfigEntry e = live.get(name);
                assertNotNull(e, name + " described");
                String value = r.value();
                String source = r.source();
                List<String> syns = r.synonyms();
                if (!againstKafka() && !source.equals("DEFAULT_CONFIG")) {
                    syns = syns.stream().filter(s -> s.endsWith("@DEFAULT_CONFIG")).toList();
                    value = syns.get(0).substring(syns.get(0).indexOf('=') + 1, syns.get(0).lastIndexOf('@'));
                    source = "DEFAULT_CONFIG";
                }
                assertEquals(value, e.value(), name + ": value");
                assertEquals(source, e.source().toString(), name + ": source");
                assertEquals(r.readOnly(), e.isReadOnly(), name + ": read-only");
                assertEquals(r.sensitive(), e.isSensitive(), name + ": sensitive");
                assertEquals(r.type(), e.type().toString(), name + ": type");
                assertEquals(syns, synonyms(e), name + ": synonyms");
                assertEquals(r.doc(), e.documentation(), name + ": documentation");
            }
            for (String name : live.keySet()) {
                assertTrue(kafka.containsKey(name) || name.startsWith("rill."),
                        name + ": only Kafka's keys and rill's own rill.* ones");
            }
        }
    }

    /**
     * Each key: created with a value (DYNAMIC_TOPIC_CONFIG, its synonyms the override then the
     * broker defaults), SET to another, DELETEd back to the answer for a topic without
     * overrides (value, source, synonyms), and an invalid value refused with INVALID_CONFIG.
     */
    @Test
    void everyKeyIsCreatedSetDeletedAndChecked() throws Exception {
        Map<String, Recorded> kafka = fixture();
        for (String name : kafka.keySet()) {
            assertTrue(VALUES.containsKey(name) || REFUSED_WHEN_SET.contains(name), name + " has test values");
        }
        try (Admin admin = Admin.create(Broker.props())) {
            Map<String, ConfigEntry> plain = new TreeMap<>();
            for (ConfigEntry e : describe(admin, create(admin, "cfg-base", Map.of())).entries()) plain.put(e.name(), e);
            for (var v : VALUES.entrySet()) {
                String name = v.getKey();
                if (!kafka.containsKey(name)) continue;
                ConfigEntry base = plain.get(name);
                String topic = create(admin, "cfg-key", Map.of(name, v.getValue()[0]));
                checkOverride(describe(admin, topic).get(name), name, v.getValue()[0], base);
                alter(admin, topic, name, v.getValue()[1], AlterConfigOp.OpType.SET);
                checkOverride(describeUntil(admin, topic, name, v.getValue()[1]), name, v.getValue()[1], base);
                alter(admin, topic, name, null, AlterConfigOp.OpType.DELETE);
                ConfigEntry reset = describeUntil(admin, topic, name, base.value());
                assertEquals(base.value(), reset.value(), name + " reset: value");
                assertEquals(base.source(), reset.source(), name + " reset: source");
                assertEquals(synonyms(base), synonyms(reset), name + " reset: synonyms");
                String type = kafka.get(name).type();
                if (!type.equals("STRING") && !type.equals("LIST")) {
                    ExecutionException ex = assertThrows(ExecutionException.class,
                            () -> alter(admin, topic, name, "not-a-value", AlterConfigOp.OpType.SET), name);
                    assertInstanceOf(InvalidConfigurationException.class, ex.getCause(), name);
                }
            }
            for (String name : REFUSED_WHEN_SET) {
                ExecutionException ex = assertThrows(ExecutionException.class,
                        () -> create(admin, "cfg-refused", Map.of(name, "true")), name);
                assertInstanceOf(InvalidConfigurationException.class, ex.getCause(), name);
            }
            ExecutionException ex = assertThrows(ExecutionException.class,
                    () -> create(admin, "cfg-unknown", Map.of("no.such.config", "1")));
            assertInstanceOf(InvalidConfigurationException.class, ex.getCause());
        }
    }

    static void checkOverride(ConfigEntry e, String name, String value, ConfigEntry base) {
        assertEquals(value, e.value(), name + ": value");
        assertEquals(ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, e.source(), name + ": source");
        List<String> expected = new ArrayList<>();
        expected.add(synonym(name, value, "DYNAMIC_TOPIC_CONFIG"));
        expected.addAll(synonyms(base));
        assertEquals(expected, synonyms(e), name + ": synonyms");
    }

    /** APPEND and SUBTRACT on the LIST keys start from the default and keep list order. */
    @Test
    void listKeysAppendAndSubtract() throws Exception {
        try (Admin admin = Admin.create(Broker.props())) {
            String topic = create(admin, "cfg-lists", Map.of());
            alter(admin, topic, "cleanup.policy", "compact", AlterConfigOp.OpType.APPEND);
            assertEquals("delete,compact", describeUntil(admin, topic, "cleanup.policy", "delete,compact").value());
            alter(admin, topic, "cleanup.policy", "delete", AlterConfigOp.OpType.SUBTRACT);
            assertEquals("compact", describeUntil(admin, topic, "cleanup.policy", "compact").value());
            for (String key : List.of("leader.replication.throttled.replicas", "follower.replication.throttled.replicas")) {
                alter(admin, topic, key, "0:1", AlterConfigOp.OpType.APPEND);
                describeUntil(admin, topic, key, "0:1");
                alter(admin, topic, key, "1:1", AlterConfigOp.OpType.APPEND);
                assertEquals("0:1,1:1", describeUntil(admin, topic, key, "0:1,1:1").value(), key);
                alter(admin, topic, key, "0:1", AlterConfigOp.OpType.SUBTRACT);
                assertEquals("1:1", describeUntil(admin, topic, key, "1:1").value(), key);
            }
            ExecutionException ex = assertThrows(ExecutionException.class,
                    () -> alter(admin, topic, "retention.ms", "1", AlterConfigOp.OpType.APPEND));
            assertInstanceOf(InvalidConfigurationException.class, ex.getCause());
        }
    }

    static KafkaProducer<byte[], byte[]> producer(int requestSizeMax) {
        Properties p = Broker.props();
        p.put("acks", "all");
        p.put("retries", "0");
        p.put("enable.idempotence", "false");
        p.put("max.request.size", String.valueOf(requestSizeMax));
        p.put("delivery.timeout.ms", "60000");
        return new KafkaProducer<>(p, new ByteArraySerializer(), new ByteArraySerializer());
    }

    static Throwable sendFailure(KafkaProducer<byte[], byte[]> p, String topic, Long timestamp, int size) {
        try {
            p.send(new ProducerRecord<>(topic, 0, timestamp, null, new byte[size])).get(CALL_S, TimeUnit.SECONDS);
            return null;
        } catch (ExecutionException e) {
            return e.getCause();
        } catch (Exception e) {
            return e;
        }
    }

    /** LogAppendTime: a record sent with an old CreateTime comes back stamped with the broker's time. */
    @Test
    void logAppendTimeStampsRecordsWithTheBrokerTime() throws Exception {
        final long skewMs = 5_000;
        String topic;
        try (Admin admin = Admin.create(Broker.props())) {
            topic = create(admin, "cfg-lat", Map.of("message.timestamp.type", "LogAppendTime"));
            AdminTest.awaitServing(admin, topic, 1);
        }
        long before = System.currentTimeMillis();
        try (KafkaProducer<byte[], byte[]> p = producer(1 << 20)) {
            assertNull(sendFailure(p, topic, 1_000L, 10));
        }
        long after = System.currentTimeMillis();
        Properties c = Broker.props();
        c.put("auto.offset.reset", "earliest");
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(c, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
            TopicPartition tp = new TopicPartition(topic, 0);
            consumer.assign(List.of(tp));
            consumer.seekToBeginning(List.of(tp));
            List<ConsumerRecord<byte[], byte[]>> got = new ArrayList<>();
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(CALL_S);
            while (got.isEmpty() && System.nanoTime() < deadline) {
                consumer.poll(java.time.Duration.ofMillis(200)).forEach(got::add);
            }
            assertEquals(1, got.size());
            assertEquals(TimestampType.LOG_APPEND_TIME, got.get(0).timestampType());
            long ts = got.get(0).timestamp();
            assertTrue(ts >= before - skewMs && ts <= after + skewMs, ts + " not in [" + before + ", " + after + "]");
        }
    }

    /** The timestamp bounds refuse out-of-range CreateTimes with INVALID_TIMESTAMP; max.message.bytes a large record. */
    @Test
    void timestampBoundsAndMaxMessageBytesRefuse() throws Exception {
        String topic;
        try (Admin admin = Admin.create(Broker.props())) {
            topic = create(admin, "cfg-bounds", Map.of(
                    "message.timestamp.before.max.ms", "60000",
                    "message.timestamp.after.max.ms", "60000",
                    "max.message.bytes", "100000"));
            AdminTest.awaitServing(admin, topic, 1);
        }
        long now = System.currentTimeMillis();
        try (KafkaProducer<byte[], byte[]> p = producer(1 << 20)) {
            assertNull(sendFailure(p, topic, now, 10), "in range");
            assertInstanceOf(InvalidTimestampException.class, sendFailure(p, topic, now - 3_600_000, 10), "an hour old");
            assertInstanceOf(InvalidTimestampException.class, sendFailure(p, topic, now + 3_600_000, 10), "an hour ahead");
            assertInstanceOf(RecordTooLargeException.class, sendFailure(p, topic, now, 200_000), "over max.message.bytes");
            assertNull(sendFailure(p, topic, System.currentTimeMillis(), 50_000), "under it");
        }
    }
}
