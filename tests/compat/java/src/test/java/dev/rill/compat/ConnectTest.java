package dev.rill.compat;

import static org.junit.jupiter.api.Assertions.*;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigDef;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.connect.cli.ConnectDistributed;
import org.apache.kafka.connect.connector.Task;
import org.apache.kafka.connect.data.Schema;
import org.apache.kafka.connect.runtime.Connect;
import org.apache.kafka.connect.runtime.Herder;
import org.apache.kafka.connect.runtime.rest.entities.ConnectorInfo;
import org.apache.kafka.connect.source.SourceConnector;
import org.apache.kafka.connect.source.SourceRecord;
import org.apache.kafka.connect.source.SourceTask;
import org.apache.kafka.connect.util.FutureCallback;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * A Kafka Connect distributed worker keeps its state in three compacted topics (connector
 * configs, source offsets, statuses). Here a worker runs a small counting source connector
 * whose offsets are committed many times under one key; the offsets topic is cleaned by the
 * broker's log cleaner (checked on rill by its size shrinking); then a new worker starts on
 * the same topics and must find the connector's config and resume from its committed offset,
 * so the data topic ends with every number exactly once.
 */
@Timeout(value = 240, unit = TimeUnit.SECONDS)
class ConnectTest {

    /** Emits "n" for n = (last committed n) + 1 up to `max`, one every 10 ms. */
    public static class CountingSource extends SourceConnector {
        private Map<String, String> props;

        @Override public String version() { return "1"; }
        @Override public void start(Map<String, String> props) { this.props = props; }
        @Override public Class<? extends Task> taskClass() { return CountingTask.class; }
        @Override public List<Map<String, String>> taskConfigs(int maxTasks) { return List.of(props); }
        @Override public void stop() {}
        @Override public ConfigDef config() {
            return new ConfigDef()
                    .define("topic", ConfigDef.Type.STRING, ConfigDef.Importance.HIGH, "target topic")
                    .define("max", ConfigDef.Type.INT, ConfigDef.Importance.HIGH, "last number");
        }
    }

    public static class CountingTask extends SourceTask {
        private static final Map<String, String> PARTITION = Map.of("source", "counter");
        private String topic;
        private long next;
        private long max;

        @Override public String version() { return "1"; }

        @Override public void start(Map<String, String> props) {
            topic = props.get("topic");
            max = Long.parseLong(props.get("max"));
            Map<String, Object> committed = context.offsetStorageReader().offset(PARTITION);
            next = committed == null ? 0 : ((Number) committed.get("n")).longValue() + 1;
        }

        @Override public List<SourceRecord> poll() throws InterruptedException {
            Thread.sleep(10);
            if (next > max) return null;
            long n = next++;
            return List.of(new SourceRecord(PARTITION, Map.of("n", n), topic, 0,
                    Schema.STRING_SCHEMA, "n", Schema.STRING_SCHEMA, Long.toString(n)));
        }

        @Override public void stop() {}
    }

    static Map<String, String> workerProps(String prefix) {
        Map<String, String> p = new HashMap<>();
        p.put("bootstrap.servers", Broker.bootstrap());
        p.put("group.id", prefix + "-workers");
        p.put("config.storage.topic", prefix + "-configs");
        p.put("offset.storage.topic", prefix + "-offsets");
        p.put("status.storage.topic", prefix + "-status");
        p.put("config.storage.replication.factor", "1");
        p.put("offset.storage.replication.factor", "1");
        p.put("status.storage.replication.factor", "1");
        p.put("key.converter", "org.apache.kafka.connect.storage.StringConverter");
        p.put("value.converter", "org.apache.kafka.connect.storage.StringConverter");
        p.put("offset.flush.interval.ms", "100");
        p.put("listeners", "http://127.0.0.1:0");
        p.put("plugin.discovery", "only_scan");
        return p;
    }

    static Connect<?> startWorker(Map<String, String> props) {
        return new ConnectDistributed().startConnect(props);
    }

    interface Call<T> {
        void start(FutureCallback<T> callback);
    }

    /** A herder request, retried while the worker is still joining its group (bounded). */
    static <T> T ask(Call<T> call) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        while (true) {
            FutureCallback<T> done = new FutureCallback<>();
            call.start(done);
            try {
                return done.get(60, TimeUnit.SECONDS);
            } catch (java.util.concurrent.ExecutionException e) {
                // Only "not ready yet" (joining, rebalancing) is worth another try.
                boolean notReady = e.getCause() instanceof org.apache.kafka.connect.runtime.distributed.RebalanceNeededException
                        || e.getCause() instanceof org.apache.kafka.connect.runtime.distributed.NotLeaderException
                        || e.getCause() instanceof org.apache.kafka.connect.errors.NotFoundException;
                if (!notReady || System.nanoTime() > deadline) throw e;
                Thread.sleep(200);
            }
        }
    }

    static void putConnector(Herder herder, String topic, int max) throws Exception {
        ask((FutureCallback<Herder.Created<ConnectorInfo>> done) -> herder.putConnectorConfig("counter", Map.of(
                "name", "counter", "connector.class", CountingSource.class.getName(),
                "tasks.max", "1", "topic", topic, "max", Integer.toString(max)), true, done));
    }

    static List<String> readAll(String topic, int expected) {
        Map<String, Object> c = new HashMap<>();
        c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, Broker.bootstrap());
        c.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        c.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        List<String> values = new ArrayList<>();
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(c)) {
            TopicPartition tp = new TopicPartition(topic, 0);
            consumer.assign(List.of(tp));
            consumer.seekToBeginning(List.of(tp));
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            while (values.size() < expected && System.nanoTime() < deadline) {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) values.add(r.value());
            }
            // Anything beyond `expected` (duplicates) arrives within a short extra wait.
            long extra = System.nanoTime() + TimeUnit.SECONDS.toNanos(2);
            while (System.nanoTime() < extra) {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) values.add(r.value());
            }
        }
        return values;
    }

    /** {end offset, records still in the log} of partition 0 of {@code topic}. */
    static long[] retained(String topic) {
        Map<String, Object> c = new HashMap<>();
        c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, Broker.bootstrap());
        c.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        c.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(c)) {
            TopicPartition tp = new TopicPartition(topic, 0);
            consumer.assign(List.of(tp));
            long end = consumer.endOffsets(List.of(tp), Duration.ofSeconds(30)).get(tp);
            consumer.seekToBeginning(List.of(tp));
            long count = 0;
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (consumer.position(tp, Duration.ofSeconds(30)) < end && System.nanoTime() < deadline) {
                count += consumer.poll(Duration.ofMillis(200)).count();
            }
            return new long[] {end, count};
        }
    }

    static List<String> numbers(int upTo) {
        List<String> l = new ArrayList<>();
        for (int i = 0; i <= upTo; i++) l.add(Integer.toString(i));
        return l;
    }

    @Test
    void workerRestartsWithConfigAndOffsetsAfterCleaning() throws Exception {
        String prefix = Broker.uniqueTopic("connect");
        String data = prefix + "-data";
        boolean rill = System.getenv("KAFKA_BOOTSTRAP") == null || System.getenv("KAFKA_BOOTSTRAP").isEmpty();
        try (Admin admin = Admin.create(Broker.props())) {
            Map<String, String> compact = Map.of("cleanup.policy", "compact", "segment.ms", "100",
                    "min.cleanable.dirty.ratio", "0.01");
            admin.createTopics(List.of(
                    new NewTopic(prefix + "-configs", 1, (short) 1).configs(compact),
                    new NewTopic(prefix + "-offsets", 1, (short) 1).configs(compact),
                    new NewTopic(prefix + "-status", 1, (short) 1).configs(compact),
                    new NewTopic(data, 1, (short) 1))).all().get(30, TimeUnit.SECONDS);
            AdminTest.awaitServing(admin, data, 1);

            Connect<?> first = startWorker(workerProps(prefix));
            try {
                putConnector(first.herder(), data, 299);
                assertEquals(numbers(299), readAll(data, 300));
            } finally {
                first.stop();
            }
            if (rill) {
                // Each offset flush wrote the one key again; the cleaner keeps its last value.
                // The end offset counts every write and the records still there what the
                // cleaner kept: counted, not compared with an earlier size, because the cleaner
                // may already have run while the worker did.
                String offsets = prefix + "-offsets";
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(90);
                long[] seen = retained(offsets);
                while (seen[1] * 2 > seen[0] && System.nanoTime() < deadline) {
                    Thread.sleep(500);
                    seen = retained(offsets);
                }
                assertTrue(seen[0] >= 4, "offset flushes written: " + seen[0]);
                assertTrue(seen[1] * 2 <= seen[0],
                        "offsets topic cleaned: " + seen[1] + " of " + seen[0] + " records left");
            }

            Connect<?> second = startWorker(workerProps(prefix));
            try {
                Herder herder = second.herder();
                Collection<String> names = ask(herder::connectors);
                assertEquals(Set.of("counter"), Set.copyOf(names));
                Map<String, String> config = ask(done -> herder.connectorConfig("counter", done));
                assertEquals("299", config.get("max"));
                // The task resumes after its committed offset: 300..399 follow, nothing repeats.
                putConnector(second.herder(), data, 399);
                assertEquals(numbers(399), readAll(data, 400));
            } finally {
                second.stop();
            }
        }
    }
}
