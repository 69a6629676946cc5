// Throughput of one Java producer over many partitions, for scripts/bench-partitions.
// Run with the source launcher: java -cp "$KAFKA_HOME/lib/*" PartitionsPerf.java ARGS
//
//   create  BOOTSTRAP PREFIX TOPICS PARTITIONS          create PREFIX-0..TOPICS-1, wait for leaders
//   produce BOOTSTRAP PREFIX TOPICS PARTITIONS RECORD_BYTES SECONDS ACKS
//           records go to one partition until a 16 KiB batch is full, then to the next
//           (all partitions of all topics in turn), so batches are spread evenly
//   probe   BOOTSTRAP TOPIC TIMEOUT_S                    ms until one acks=1 record to TOPIC-0 is acknowledged
//
// The same client settings for every partition count: batch.size 16384, linger.ms 5,
// buffer.memory 256 MiB, no compression.
import java.util.*;
import java.util.concurrent.*;
import java.util.concurrent.atomic.*;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class PartitionsPerf {
    public static void main(String[] a) throws Exception {
        switch (a[0]) {
            case "create" -> create(a[1], a[2], Integer.parseInt(a[3]), Integer.parseInt(a[4]));
            case "produce" -> produce(a[1], a[2], Integer.parseInt(a[3]), Integer.parseInt(a[4]),
                    Integer.parseInt(a[5]), Double.parseDouble(a[6]), a[7]);
            case "probe" -> probe(a[1], a[2], Double.parseDouble(a[3]));
            default -> throw new IllegalArgumentException(a[0]);
        }
    }

    static void create(String bootstrap, String prefix, int topics, int partitions) throws Exception {
        try (Admin admin = Admin.create(Map.of("bootstrap.servers", bootstrap))) {
            List<NewTopic> all = new ArrayList<>();
            // -Dtopic.configs=k=v,k=v: topic configs of the created topics (rill's visibility, say).
            Map<String, String> configs = new HashMap<>();
            for (String kv : System.getProperty("topic.configs", "").split(",")) {
                int eq = kv.indexOf('=');
                if (eq > 0) configs.put(kv.substring(0, eq), kv.substring(eq + 1));
            }
            for (int t = 0; t < topics; t++) {
                all.add(new NewTopic(prefix + "-" + t, partitions, (short) 1).configs(configs));
            }
            // In groups of 10 topics: one huge CreateTopics can outlast the request timeout.
            for (int i = 0; i < all.size(); i += 10) {
                admin.createTopics(all.subList(i, Math.min(all.size(), i + 10))).all().get(300, TimeUnit.SECONDS);
            }
            Set<String> names = new HashSet<>();
            for (NewTopic n : all) names.add(n.name());
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(600);
            while (true) {
                boolean ready;
                try {
                    Map<String, TopicDescription> d = admin.describeTopics(names).allTopicNames().get(120, TimeUnit.SECONDS);
                    ready = d.values().stream().allMatch(td -> td.partitions().size() == partitions
                            && td.partitions().stream().allMatch(p -> p.leader() != null && p.leader().id() >= 0));
                } catch (ExecutionException e) {
                    // Kafka answers UNKNOWN_TOPIC_OR_PARTITION until new topics reach its metadata.
                    ready = false;
                }
                if (ready) break;
                if (System.nanoTime() > deadline) throw new IllegalStateException("no leaders after 600 s");
                Thread.sleep(200);
            }
        }
    }

    static Properties props(String bootstrap, String acks) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("acks", acks);
        p.put("batch.size", "16384");
        p.put("linger.ms", "5");
        p.put("buffer.memory", String.valueOf(256L << 20));
        p.put("compression.type", "none");
        p.put("max.block.ms", "120000");
        p.put("delivery.timeout.ms", "300000");
        p.put("request.timeout.ms", "120000");
        p.put("key.serializer", ByteArraySerializer.class.getName());
        p.put("value.serializer", ByteArraySerializer.class.getName());
        return p;
    }

    static void produce(String bootstrap, String prefix, int topics, int partitions, int recordBytes,
                        double seconds, String acks) throws Exception {
        byte[] value = new byte[recordBytes];
        Arrays.fill(value, (byte) 'x');
        // Records per 16 KiB batch (each record adds ~10 bytes of framing in a v2 batch).
        int perBatch = Math.max(1, (16384 - 61) / (recordBytes + 10));
        int total = topics * partitions;
        String[] names = new String[topics];
        for (int t = 0; t < topics; t++) names[t] = prefix + "-" + t;
        AtomicLong acked = new AtomicLong();
        AtomicLong failed = new AtomicLong();
        AtomicReference<Exception> firstError = new AtomicReference<>();
        Callback cb = (m, e) -> {
            if (e == null) acked.incrementAndGet();
            else { failed.incrementAndGet(); firstError.compareAndSet(null, e); }
        };
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(props(bootstrap, acks))) {
            // Metadata for every topic first, so the timed part measures producing only.
            for (String n : names) producer.partitionsFor(n);
            long start = System.nanoTime();
            long end = start + (long) (seconds * 1e9);
            long sent = 0;
            while ((sent & 1023) != 0 || System.nanoTime() < end) {
                long slot = (sent / perBatch) % total;
                int t = (int) (slot / partitions), p = (int) (slot % partitions);
                producer.send(new ProducerRecord<>(names[t], p, null, value), cb);
                sent++;
            }
            producer.flush();
            double elapsed = (System.nanoTime() - start) / 1e9;
            double mb = acked.get() * (double) recordBytes / 1e6;
            System.out.printf(Locale.ROOT,
                    "result partitions=%d acks=%s records=%d failed=%d seconds=%.2f MBps=%.1f recps=%.0f%n",
                    total, acks, acked.get(), failed.get(), elapsed, mb / elapsed, acked.get() / elapsed);
            if (failed.get() > 0) System.out.println("first error: " + firstError.get());
        }
    }

    static void probe(String bootstrap, String topic, double timeoutS) throws Exception {
        long start = System.nanoTime();
        long deadline = start + (long) (timeoutS * 1e9);
        Properties p = props(bootstrap, "1");
        p.put("max.block.ms", "2000");
        p.put("request.timeout.ms", "2000");
        p.put("delivery.timeout.ms", "4000");
        p.put("reconnect.backoff.ms", "20");
        p.put("reconnect.backoff.max.ms", "100");
        while (System.nanoTime() < deadline) {
            try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
                producer.send(new ProducerRecord<>(topic, 0, null, new byte[]{1})).get(5, TimeUnit.SECONDS);
                System.out.printf(Locale.ROOT, "probe acknowledged after %d ms%n", (System.nanoTime() - start) / 1_000_000);
                return;
            } catch (Exception e) {
                Thread.sleep(50);
            }
        }
        System.out.println("probe failed: no acknowledgement within " + timeoutS + " s");
        System.exit(1);
    }
}
