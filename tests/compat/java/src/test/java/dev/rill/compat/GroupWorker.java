package dev.rill.compat;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.WakeupException;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

/**
 * One consumer-group member (kafka-clients, classic protocol) as its own JVM, spawned by
 * {@link GroupsTest} so that it can be killed with SIGKILL. Subscribes to one topic; for each
 * poll: reports the records, commits the next offsets with commitSync, reports the commit.
 * SIGTERM closes the consumer (LeaveGroup). Exits by itself after maxSeconds (bound).
 *
 * <p>Output, one event per line: {@code READY}, {@code ASSIGN|REVOKE|LOST <parts> NOW <parts>}
 * (parts comma-separated, "-" when empty), {@code REC <partition> <offset> <value>},
 * {@code COMMIT <p>=<next>,...}, {@code COMMIT_ERROR <text>}, {@code CLOSED}.
 *
 * <p>Args: bootstrap group topic clientId sessionTimeoutMs maxSeconds [groupInstanceId [protocol]]
 * (protocol {@code classic}, the default, or {@code consumer}: KIP-848, where the session
 * timeout and heartbeat interval are the broker's)
 */
public final class GroupWorker {
    private static final Object OUT = new Object();

    static void emit(String line) {
        synchronized (OUT) {
            System.out.println(line);
            System.out.flush();
        }
    }

    static String parts(Collection<TopicPartition> tps) {
        if (tps.isEmpty()) return "-";
        return tps.stream().map(TopicPartition::partition).sorted().map(String::valueOf)
                .collect(Collectors.joining(","));
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], group = args[1], topic = args[2], clientId = args[3];
        int sessionTimeoutMs = Integer.parseInt(args[4]);
        long maxSeconds = Long.parseLong(args[5]);
        String instanceId = args.length > 6 ? args[6] : "";
        String protocol = args.length > 7 ? args[7] : "classic";
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("group.id", group);
        p.put("client.id", clientId);
        p.put("group.protocol", protocol);
        p.put("enable.auto.commit", "false");
        p.put("auto.offset.reset", "earliest");
        if (protocol.equals("classic")) {
            p.put("session.timeout.ms", String.valueOf(sessionTimeoutMs));
            p.put("heartbeat.interval.ms", "1000");
        }
        p.put("max.poll.interval.ms", "60000");
        p.put("metadata.max.age.ms", "2000");
        p.put("request.timeout.ms", "30000");
        p.put("default.api.timeout.ms", "30000");
        if (!instanceId.isEmpty()) p.put("group.instance.id", instanceId);  // static membership
        KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(p, new ByteArrayDeserializer(), new ByteArrayDeserializer());
        TreeSet<TopicPartition> owned = new TreeSet<>((a, b) -> Integer.compare(a.partition(), b.partition()));
        CountDownLatch done = new CountDownLatch(1);
        Thread main = Thread.currentThread();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {  // SIGTERM: close cleanly
            c.wakeup();
            try {
                done.await(20, TimeUnit.SECONDS);
            } catch (InterruptedException ignored) {
            }
        }));
        c.subscribe(List.of(topic), new ConsumerRebalanceListener() {
            @Override
            public void onPartitionsRevoked(Collection<TopicPartition> parts) {
                owned.removeAll(parts);
                emit("REVOKE " + parts(parts) + " NOW " + parts(owned));
            }

            @Override
            public void onPartitionsAssigned(Collection<TopicPartition> parts) {
                owned.addAll(parts);
                emit("ASSIGN " + parts(parts) + " NOW " + parts(owned));
            }

            @Override
            public void onPartitionsLost(Collection<TopicPartition> parts) {
                owned.removeAll(parts);
                emit("LOST " + parts(parts) + " NOW " + parts(owned));
            }
        });
        emit("READY");
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(maxSeconds);
        try {
            while (System.nanoTime() < deadline) {
                List<String> lines = new ArrayList<>();
                Map<TopicPartition, OffsetAndMetadata> next = new TreeMap<>(
                        (a, b) -> Integer.compare(a.partition(), b.partition()));
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(200))) {
                    lines.add("REC " + r.partition() + " " + r.offset() + " "
                            + new String(r.value(), StandardCharsets.UTF_8));
                    next.put(new TopicPartition(r.topic(), r.partition()), new OffsetAndMetadata(r.offset() + 1));
                }
                if (lines.isEmpty()) continue;
                synchronized (OUT) {
                    for (String l : lines) System.out.println(l);
                    System.out.flush();
                }
                try {
                    c.commitSync(next);
                    emit("COMMIT " + next.entrySet().stream()
                            .map(e -> e.getKey().partition() + "=" + e.getValue().offset())
                            .collect(Collectors.joining(",")));
                } catch (WakeupException e) {
                    throw e;
                } catch (KafkaException e) {
                    emit("COMMIT_ERROR " + e.toString().replace('\n', ' '));
                }
            }
        } catch (WakeupException e) {
            // SIGTERM
        } finally {
            c.close(Duration.ofSeconds(10));
            emit("CLOSED");
            done.countDown();
        }
        if (main.isInterrupted()) System.exit(1);
    }
}
