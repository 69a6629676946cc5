package dev.rill.compat;

import static org.junit.jupiter.api.Assertions.*;

import java.io.BufferedReader;
import java.io.File;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.TreeMap;
import java.util.UUID;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.IsolationLevel;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.LongDeserializer;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Kafka Streams (4.4.0) word count with processing.guarantee=exactly_once_v2 ({@link
 * WordCountApp}, its own JVM, sleeping 2 ms per line) over 3000 lines of 5 words. Streams creates its repartition and
 * changelog topics itself. The record cache is off, so every count update is written to the
 * output at once inside the open transaction, and the transaction commits every 200 ms. The
 * app is killed hard (destroyForcibly) twice while it works and started again each time on the
 * same state dir. Finally, read read_committed, the output holds for every word exactly the
 * counts 1, 2, ..., N in order (N its number of occurrences): no update lost, none repeated;
 * read_uncommitted shows more records than that, so the kills left aborted transactions behind.
 */
@Timeout(value = 300, unit = TimeUnit.SECONDS)
class StreamsEosTest {
    static final int PARTITIONS = 3;
    static final int LINES = 3000;
    static final int WORDS_PER_LINE = 5;

    /** One WordCountApp JVM: its stdout lines, collected. */
    static final class App implements AutoCloseable {
        final Process proc;
        final Path stderr;
        final List<String> lines = new ArrayList<>();

        App(String bootstrap, String appId, String input, String output, Path stateDir) throws IOException {
            String cp = System.getProperty("surefire.test.class.path", System.getProperty("java.class.path"));
            String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
            stderr = Files.createTempFile("wordcount-", ".log");
            proc = new ProcessBuilder(java, "-Xmx256m", "-XX:TieredStopAtLevel=1",
                    "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp", cp,
                    WordCountApp.class.getName(), bootstrap, appId, input, output, stateDir.toString(), "150", "2")
                    .redirectError(stderr.toFile())
                    .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")))
                    .start();
            Thread t = new Thread(() -> {
                try (BufferedReader r = new BufferedReader(new InputStreamReader(proc.getInputStream(), StandardCharsets.UTF_8))) {
                    for (String l; (l = r.readLine()) != null; ) synchronized (lines) { lines.add(l); }
                } catch (IOException ignored) {
                }
            }, "wordcount-stdout");
            t.setDaemon(true);
            t.start();
        }

        boolean saw(String line) {
            synchronized (lines) {
                return lines.contains(line);
            }
        }

        String describe() {
            String err;
            try {
                err = Files.readString(stderr);
            } catch (IOException e) {
                err = e.toString();
            }
            synchronized (lines) {
                return "stdout " + lines + "; stderr tail: " + err.substring(Math.max(0, err.length() - 3000));
            }
        }

        void awaitRunning() throws InterruptedException {
            await(() -> saw("state RUNNING") || !proc.isAlive() || saw("state ERROR"), 90, "app RUNNING");
            assertTrue(proc.isAlive() && saw("state RUNNING"), () -> "app did not reach RUNNING: " + describe());
        }

        void kill() throws InterruptedException {
            proc.destroyForcibly();   // SIGKILL: no commit, no close, the open transaction left behind
            assertTrue(proc.waitFor(10, TimeUnit.SECONDS));
        }

        @Override
        public void close() throws IOException, InterruptedException {
            if (proc.isAlive()) {
                proc.destroy();
                if (!proc.waitFor(20, TimeUnit.SECONDS)) proc.destroyForcibly().waitFor(10, TimeUnit.SECONDS);
            }
            Files.deleteIfExists(stderr);
        }
    }

    static void await(BooleanSupplier cond, long seconds, String what) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds);
        while (!cond.getAsBoolean()) {
            if (System.nanoTime() > deadline) fail("timed out after " + seconds + " s waiting for " + what);
            Thread.sleep(100);
        }
    }

    static long outputEnd(Admin admin, String topic) throws Exception {
        Map<TopicPartition, OffsetSpec> req = new HashMap<>();
        for (int i = 0; i < PARTITIONS; i++) req.put(new TopicPartition(topic, i), OffsetSpec.latest());
        long sum = 0;
        for (var r : admin.listOffsets(req).all().get(30, TimeUnit.SECONDS).values()) sum += r.offset();
        return sum;
    }

    /** Every (word, count) record of the output in partition order, for one isolation level. */
    static Map<String, List<Long>> readCounts(String topic, IsolationLevel level) {
        Map<String, List<Long>> out = new TreeMap<>();
        java.util.Properties p = Broker.props();
        p.put("isolation.level", level.toString());
        p.put("enable.auto.commit", "false");
        try (KafkaConsumer<String, Long> c = new KafkaConsumer<>(p, new StringDeserializer(), new LongDeserializer())) {
            for (int part = 0; part < PARTITIONS; part++) {
                TopicPartition tp = new TopicPartition(topic, part);
                c.assign(List.of(tp));
                c.seek(tp, 0);
                long end = c.endOffsets(List.of(tp)).get(tp);
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
                while (c.position(tp) < end) {
                    assertTrue(System.nanoTime() < deadline, () -> "reading " + tp + " stuck at " + c.position(tp) + " of " + end);
                    for (ConsumerRecord<String, Long> r : c.poll(Duration.ofMillis(200)))
                        out.computeIfAbsent(r.key(), k -> new ArrayList<>()).add(r.value());
                }
            }
        }
        return out;
    }

    @Test
    void wordCountExactlyOnceV2SurvivesHardKills() throws Exception {
        String input = Broker.uniqueTopic("wc-in");
        String output = Broker.uniqueTopic("wc-out");
        String appId = "java-wc-" + UUID.randomUUID().toString().substring(0, 8);
        try (Admin admin = Admin.create(Broker.props())) {
            admin.createTopics(List.of(new NewTopic(input, PARTITIONS, (short) 1), new NewTopic(output, PARTITIONS, (short) 1)))
                    .all().get(30, TimeUnit.SECONDS);
            AdminTest.awaitTopic(admin, input, true);
            AdminTest.awaitTopic(admin, output, true);
            AdminTest.awaitServing(admin, input, PARTITIONS);
            AdminTest.awaitServing(admin, output, PARTITIONS);
        }

        Map<String, Long> expected = new TreeMap<>();
        Random rnd = new Random(42);
        try (KafkaProducer<String, String> p = new KafkaProducer<>(Broker.props(), new StringSerializer(), new StringSerializer())) {
            for (int i = 0; i < LINES; i++) {
                StringBuilder line = new StringBuilder();
                for (int w = 0; w < WORDS_PER_LINE; w++) {
                    String word = "w" + rnd.nextInt(60);
                    expected.merge(word, 1L, Long::sum);
                    if (w > 0) line.append(' ');
                    line.append(word);
                }
                p.send(new ProducerRecord<>(input, i % PARTITIONS, "line" + i, line.toString()));
            }
            p.flush();
        }
        long updates = (long) LINES * WORDS_PER_LINE;

        Path stateDir = Files.createTempDirectory("wordcount-state-");
        try (Admin admin = Admin.create(Broker.props())) {
            // two hard kills, each once the output has grown by a share of the updates
            long[] killAt = {updates / 10, updates / 2};
            for (long at : killAt) {
                try (App app = new App(Broker.bootstrap(), appId, input, output, stateDir)) {
                    app.awaitRunning();
                    await(() -> {
                        try {
                            return outputEnd(admin, output) >= at || !app.proc.isAlive();
                        } catch (Exception e) {
                            throw new RuntimeException(e);
                        }
                    }, 90, "output to reach " + at + " records");
                    assertTrue(app.proc.isAlive(), () -> "app died: " + app.describe());
                    app.kill();
                }
            }
            try (App app = new App(Broker.bootstrap(), appId, input, output, stateDir)) {
                app.awaitRunning();
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
                Map<String, List<Long>> got;
                while (true) {
                    got = readCounts(output, IsolationLevel.READ_COMMITTED);
                    boolean complete = true;
                    for (var e : expected.entrySet()) {
                        List<Long> vs = got.get(e.getKey());
                        if (vs == null || vs.get(vs.size() - 1) < e.getValue()) complete = false;
                    }
                    if (complete) break;
                    assertTrue(app.proc.isAlive(), () -> "app died: " + app.describe());
                    assertTrue(System.nanoTime() < deadline, "final counts not reached in 120 s");
                    Thread.sleep(500);
                }
                assertEquals(expected.keySet(), got.keySet(), "words");
                for (var e : expected.entrySet()) {
                    List<Long> want = new ArrayList<>();
                    for (long n = 1; n <= e.getValue(); n++) want.add(n);
                    assertEquals(want, got.get(e.getKey()), "committed count updates of " + e.getKey());
                }
                long committed = got.values().stream().mapToLong(List::size).sum();
                assertEquals(updates, committed);
                long all = readCounts(output, IsolationLevel.READ_UNCOMMITTED).values().stream().mapToLong(List::size).sum();
                assertTrue(all > committed, "no aborted updates in the output: the kills did not land mid-transaction");

                // the internal topics Streams created for itself: the repartition topic (by
                // word) and the store's compacted changelog
                String store = appId + "-KSTREAM-AGGREGATE-STATE-STORE-0000000003";
                var names = admin.listTopics().names().get(30, TimeUnit.SECONDS);
                assertTrue(names.contains(store + "-repartition"), () -> "topics: " + names);
                assertTrue(names.contains(store + "-changelog"), () -> "topics: " + names);
                var changelog = new org.apache.kafka.common.config.ConfigResource(
                        org.apache.kafka.common.config.ConfigResource.Type.TOPIC, store + "-changelog");
                String policy = admin.describeConfigs(List.of(changelog)).all().get(30, TimeUnit.SECONDS)
                        .get(changelog).get("cleanup.policy").value();
                assertEquals("compact", policy, "changelog cleanup.policy");
            }
        } finally {
            try (var walk = Files.walk(stateDir)) {
                walk.sorted(Comparator.reverseOrder()).map(Path::toFile).forEach(File::delete);
            }
        }
    }
}
