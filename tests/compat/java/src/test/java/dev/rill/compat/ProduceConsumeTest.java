package dev.rill.compat;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.record.TimestampType;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

@Timeout(value = 120, unit = TimeUnit.SECONDS)
class ProduceConsumeTest {

    /** An hour ago, whole seconds: explicit timestamps must be recent, because a broker deletes
     *  records older than retention.ms (7 days by default). */
    static final long BASE_TS = (System.currentTimeMillis() / 1000) * 1000 - 3_600_000L;

    static String createTopic(String prefix, int partitions) throws Exception {
        String topic = Broker.uniqueTopic(prefix);
        try (Admin admin = Admin.create(Broker.props())) {
            admin.createTopics(List.of(new NewTopic(topic, partitions, (short) 1))).all().get(30, TimeUnit.SECONDS);
            AdminTest.awaitTopic(admin, topic, true);
            AdminTest.awaitServing(admin, topic, partitions);
        }
        return topic;
    }

    static KafkaProducer<byte[], byte[]> producer(String acks, String codec) {
        Properties p = Broker.props();
        p.put("acks", acks);
        p.put("compression.type", codec);
        p.put("linger.ms", "5");
        p.put("enable.idempotence", "false");  // idempotence needs InitProducerId; covered separately later
        p.put("delivery.timeout.ms", "60000");
        return new KafkaProducer<>(p, new ByteArraySerializer(), new ByteArraySerializer());
    }

    static KafkaConsumer<byte[], byte[]> consumer() {
        Properties p = Broker.props();
        p.put("enable.auto.commit", "false");
        p.put("auto.offset.reset", "none");
        return new KafkaConsumer<>(p, new ByteArrayDeserializer(), new ByteArrayDeserializer());
    }

    /** assign()+seek(offset), poll until count records arrive; bounded. */
    static List<ConsumerRecord<byte[], byte[]>> consume(String topic, int partition, long offset, int count) {
        List<ConsumerRecord<byte[], byte[]>> out = new ArrayList<>();
        try (KafkaConsumer<byte[], byte[]> c = consumer()) {
            TopicPartition tp = new TopicPartition(topic, partition);
            c.assign(List.of(tp));
            c.seek(tp, offset);
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            while (out.size() < count && System.nanoTime() < deadline) {
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(500))) out.add(r);
            }
        }
        assertEquals(count, out.size(), "records consumed from " + topic + "-" + partition + " at " + offset);
        return out;
    }

    static byte[] value(int i) {
        return ("value-" + i + "-" + "abc".repeat(i % 40)).getBytes(StandardCharsets.UTF_8);
    }

    @ParameterizedTest(name = "acks={0} compression={1}")
    @CsvSource({
        "0,none", "1,none", "all,none", "-1,none",
        "1,gzip", "1,snappy", "1,lz4", "1,zstd",
        "all,gzip", "all,snappy", "all,lz4", "all,zstd",
        "0,zstd",
    })
    void produceAndConsume(String acks, String codec) throws Exception {
        String topic = createTopic("pc-" + codec, 2);
        int n = 500;
        List<Future<RecordMetadata>> futs = new ArrayList<>();
        try (KafkaProducer<byte[], byte[]> p = producer(acks, codec)) {
            for (int i = 0; i < n; i++) {
                RecordHeaders h = new RecordHeaders();
                h.add("idx", Integer.toString(i).getBytes(StandardCharsets.UTF_8));
                if (i % 7 == 0) h.add("seven", null);
                byte[] key = i % 5 == 0 ? null : ("key-" + i).getBytes(StandardCharsets.UTF_8);
                byte[] val = i % 11 == 0 ? null : value(i);
                futs.add(p.send(new ProducerRecord<>(topic, i % 2, BASE_TS + i, key, val, h)));
            }
            p.flush();
            for (int i = 0; i < n; i++) {
                RecordMetadata md = futs.get(i).get(60, TimeUnit.SECONDS);
                assertEquals(i % 2, md.partition());
                if (!acks.equals("0")) assertEquals(i / 2, md.offset(), "offset of record " + i);
            }
        }
        for (int part = 0; part < 2; part++) {
            List<ConsumerRecord<byte[], byte[]>> got = consume(topic, part, 0, n / 2);
            for (int j = 0; j < n / 2; j++) {
                int i = j * 2 + part;
                ConsumerRecord<byte[], byte[]> r = got.get(j);
                assertEquals(j, r.offset());
                assertEquals(TimestampType.CREATE_TIME, r.timestampType());
                assertEquals(BASE_TS + i, r.timestamp());
                if (i % 5 == 0) assertNull(r.key()); else assertArrayEquals(("key-" + i).getBytes(StandardCharsets.UTF_8), r.key());
                if (i % 11 == 0) assertNull(r.value()); else assertArrayEquals(value(i), r.value());
                assertArrayEquals(Integer.toString(i).getBytes(StandardCharsets.UTF_8), r.headers().lastHeader("idx").value());
                if (i % 7 == 0) assertNull(r.headers().lastHeader("seven").value());
                else assertNull(r.headers().lastHeader("seven"));
            }
        }
        // seek into the middle (inside a compressed batch when codec != none)
        List<ConsumerRecord<byte[], byte[]>> mid = consume(topic, 1, 123, n / 2 - 123);
        assertEquals(123, mid.get(0).offset());
        assertEquals(n / 2 - 1, mid.get(mid.size() - 1).offset());
    }

    @Test
    void largeRecordsAndManyBatches() throws Exception {
        String topic = createTopic("large", 1);
        int n = 200;
        byte[][] vals = new byte[n][];
        java.util.Random rnd = new java.util.Random(7);
        try (KafkaProducer<byte[], byte[]> p = producer("all", "none")) {
            for (int i = 0; i < n; i++) {
                vals[i] = new byte[rnd.nextInt(200_000)];
                rnd.nextBytes(vals[i]);
                p.send(new ProducerRecord<>(topic, 0, null, vals[i]));
            }
            p.flush();
        }
        List<ConsumerRecord<byte[], byte[]>> got = consume(topic, 0, 0, n);
        for (int i = 0; i < n; i++) assertArrayEquals(vals[i], got.get(i).value(), "record " + i);
    }
}
