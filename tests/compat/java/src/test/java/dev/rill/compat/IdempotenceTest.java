package dev.rill.compat;

import static org.junit.jupiter.api.Assertions.*;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Random;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * The Java producer at its defaults (acks=all, idempotence on, 5 requests in flight) through
 * a loopback proxy that cuts connections at random: every record is acknowledged and stored
 * exactly once, in order. Needs rill's --advertised-listeners to put the proxy in front, so it
 * is skipped against another broker (KAFKA_BOOTSTRAP).
 */
@Timeout(value = 180, unit = TimeUnit.SECONDS)
class IdempotenceTest {

    /** Forwards connections to `upstream`; while `cutting`, closes each after a random byte
     *  budget (both directions), forwarding a random prefix of the last chunk. */
    static final class CuttingProxy implements AutoCloseable {
        final ServerSocket server;
        volatile int upstreamPort;
        volatile boolean cutting;
        final AtomicInteger cuts = new AtomicInteger();
        private final Random rng;

        CuttingProxy(long seed) throws IOException {
            server = new ServerSocket(0, 64, InetAddress.getLoopbackAddress());
            rng = new Random(seed);
            Thread t = new Thread(this::acceptLoop, "cutting-proxy");
            t.setDaemon(true);
            t.start();
        }

        String address() {
            return "127.0.0.1:" + server.getLocalPort();
        }

        private void acceptLoop() {
            while (!server.isClosed()) {
                try {
                    Socket client = server.accept();
                    Socket upstream = new Socket();
                    try {
                        upstream.connect(new InetSocketAddress(InetAddress.getLoopbackAddress(), upstreamPort), 5000);
                    } catch (IOException e) {
                        client.close();
                        continue;
                    }
                    long budget;
                    synchronized (rng) {
                        budget = 50_000 + rng.nextInt(450_000);
                    }
                    AtomicLong left = new AtomicLong(budget);
                    pump(client, upstream, left);
                    pump(upstream, client, left);
                } catch (IOException e) {
                    return;
                }
            }
        }

        private void pump(Socket from, Socket to, AtomicLong left) {
            Thread t = new Thread(() -> {
                byte[] buf = new byte[64 * 1024];
                try (InputStream in = from.getInputStream(); OutputStream out = to.getOutputStream()) {
                    int n;
                    while ((n = in.read(buf)) > 0) {
                        if (cutting && left.addAndGet(-n) <= 0) {
                            cuts.incrementAndGet();
                            int keep;
                            synchronized (rng) {
                                keep = rng.nextInt(n + 1);
                            }
                            out.write(buf, 0, keep);
                            break;
                        }
                        out.write(buf, 0, n);
                    }
                } catch (IOException ignored) {
                } finally {
                    closeQuietly(from);
                    closeQuietly(to);
                }
            }, "cutting-proxy-pump");
            t.setDaemon(true);
            t.start();
        }

        private static void closeQuietly(Socket s) {
            try {
                s.close();
            } catch (IOException ignored) {
            }
        }

        @Override
        public void close() throws IOException {
            server.close();
        }
    }

    static byte[] value(int i) {
        return String.format("r-%06d-%0100d", i, 0).getBytes(StandardCharsets.UTF_8);
    }

    @Test
    void defaultProducerThroughConnectionCutsStoresEachRecordOnce() throws Exception {
        String ext = System.getenv("KAFKA_BOOTSTRAP");
        Assumptions.assumeTrue(ext == null || ext.isEmpty(), "needs rill's --advertised-listeners");
        final int n = 20_000;
        try (CuttingProxy proxy = new CuttingProxy(7)) {
            Broker.Started rill = Broker.start("--advertised-listeners", proxy.address());
            try {
                proxy.upstreamPort = Integer.parseInt(rill.address().substring(rill.address().lastIndexOf(':') + 1));
                String topic = Broker.uniqueTopic("idem-cuts");
                Properties direct = Broker.props();
                direct.put("bootstrap.servers", rill.address());
                try (Admin admin = Admin.create(direct)) {
                    admin.createTopics(List.of(new NewTopic(topic, 2, (short) 1))).all().get(30, TimeUnit.SECONDS);
                    AdminTest.awaitTopic(admin, topic, true);
                }
                Properties p = new Properties();
                p.put("bootstrap.servers", proxy.address());
                p.put("linger.ms", "2");
                p.put("delivery.timeout.ms", "120000");
                p.put("retry.backoff.ms", "20");
                p.put("reconnect.backoff.ms", "10");
                p.put("reconnect.backoff.max.ms", "100");
                CountDownLatch done = new CountDownLatch(n);
                AtomicInteger failed = new AtomicInteger();
                AtomicReference<Exception> firstError = new AtomicReference<>();
                proxy.cutting = true;
                try (KafkaProducer<byte[], byte[]> producer =
                             new KafkaProducer<>(p, new ByteArraySerializer(), new ByteArraySerializer())) {
                    for (int i = 0; i < n; i++) {
                        producer.send(new ProducerRecord<>(topic, i % 2, null, value(i)), (md, e) -> {
                            if (e != null) {
                                failed.incrementAndGet();
                                firstError.compareAndSet(null, e);
                            }
                            done.countDown();
                        });
                    }
                    assertTrue(done.await(150, TimeUnit.SECONDS), "deliveries did not finish");
                }
                proxy.cutting = false;
                assertEquals(0, failed.get(), () -> "failed sends, first: " + firstError.get());
                assertTrue(proxy.cuts.get() >= 3, "only " + proxy.cuts.get() + " cuts: retries not exercised");
                try (Admin admin = Admin.create(direct)) {
                    for (int part = 0; part < 2; part++) {
                        TopicPartition tp = new TopicPartition(topic, part);
                        long end = admin.listOffsets(Map.of(tp, OffsetSpec.latest())).partitionResult(tp)
                                .get(30, TimeUnit.SECONDS).offset();
                        assertEquals(n / 2, end, "partition " + part + ": records stored (duplicates or losses)");
                    }
                }
                for (int part = 0; part < 2; part++) {
                    List<ConsumerRecord<byte[], byte[]>> got = consumeFrom(proxy.address(), topic, part, n / 2);
                    for (int j = 0; j < n / 2; j++) {
                        assertArrayEquals(value(j * 2 + part), got.get(j).value(), "partition " + part + " offset " + j);
                    }
                }
            } finally {
                rill.stop();
            }
        }
    }

    static List<ConsumerRecord<byte[], byte[]>> consumeFrom(String address, String topic, int partition, int count) {
        List<ConsumerRecord<byte[], byte[]>> out = new java.util.ArrayList<>();
        Properties p = Broker.props();
        p.put("bootstrap.servers", address);
        p.put("enable.auto.commit", "false");
        p.put("auto.offset.reset", "none");
        try (var c = new org.apache.kafka.clients.consumer.KafkaConsumer<byte[], byte[]>(p,
                new org.apache.kafka.common.serialization.ByteArrayDeserializer(),
                new org.apache.kafka.common.serialization.ByteArrayDeserializer())) {
            TopicPartition tp = new TopicPartition(topic, partition);
            c.assign(List.of(tp));
            c.seek(tp, 0);
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            while (out.size() < count && System.nanoTime() < deadline) {
                for (ConsumerRecord<byte[], byte[]> r : c.poll(java.time.Duration.ofMillis(500))) out.add(r);
            }
        }
        assertEquals(count, out.size(), "records consumed from " + topic + "-" + partition);
        return out;
    }
}
