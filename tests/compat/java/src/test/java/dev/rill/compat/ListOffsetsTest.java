package dev.rill.compat;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ListOffsetsResult.ListOffsetsResultInfo;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndTimestamp;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

@Timeout(value = 120, unit = TimeUnit.SECONDS)
class ListOffsetsTest {
    static final long BASE_TS = ProduceConsumeTest.BASE_TS;

    static long offset(Admin admin, TopicPartition tp, OffsetSpec spec) throws Exception {
        Map<TopicPartition, ListOffsetsResultInfo> r = admin.listOffsets(Map.of(tp, spec)).all().get(30, TimeUnit.SECONDS);
        return r.get(tp).offset();
    }

    @Test
    void earliestLatestForTimestamp() throws Exception {
        String topic = ProduceConsumeTest.createTopic("offsets", 2);
        TopicPartition tp0 = new TopicPartition(topic, 0);
        TopicPartition tp1 = new TopicPartition(topic, 1);
        try (Admin admin = Admin.create(Broker.props())) {
            // empty partition
            assertEquals(0, offset(admin, tp0, OffsetSpec.earliest()));
            assertEquals(0, offset(admin, tp0, OffsetSpec.latest()));
            assertEquals(-1, offset(admin, tp0, OffsetSpec.forTimestamp(BASE_TS)));

            int n = 30;
            try (KafkaProducer<byte[], byte[]> p = ProduceConsumeTest.producer("all", "none")) {
                for (int i = 0; i < n; i++) {
                    p.send(new ProducerRecord<>(topic, 0, BASE_TS + 1000L * i, null,
                            ("t" + i).getBytes(StandardCharsets.UTF_8)));
                }
                p.flush();
            }
            assertEquals(0, offset(admin, tp0, OffsetSpec.earliest()));
            assertEquals(n, offset(admin, tp0, OffsetSpec.latest()));
            assertEquals(0, offset(admin, tp1, OffsetSpec.latest()));
            assertEquals(0, offset(admin, tp0, OffsetSpec.forTimestamp(BASE_TS - 5000)));
            assertEquals(7, offset(admin, tp0, OffsetSpec.forTimestamp(BASE_TS + 7000)));
            assertEquals(8, offset(admin, tp0, OffsetSpec.forTimestamp(BASE_TS + 7001)));
            assertEquals(n - 1, offset(admin, tp0, OffsetSpec.forTimestamp(BASE_TS + 1000L * (n - 1))));
            assertEquals(-1, offset(admin, tp0, OffsetSpec.forTimestamp(BASE_TS + 1000L * n)));

            ListOffsetsResultInfo info = admin.listOffsets(Map.of(tp0, OffsetSpec.forTimestamp(BASE_TS + 2500)))
                    .all().get(30, TimeUnit.SECONDS).get(tp0);
            assertEquals(3, info.offset());
            assertEquals(BASE_TS + 3000, info.timestamp());

            // max timestamp: the record with the largest timestamp
            ListOffsetsResultInfo max = admin.listOffsets(Map.of(tp0, OffsetSpec.maxTimestamp()))
                    .all().get(30, TimeUnit.SECONDS).get(tp0);
            assertEquals(n - 1, max.offset());
            assertEquals(BASE_TS + 1000L * (n - 1), max.timestamp());
        }
        try (KafkaConsumer<byte[], byte[]> c = ProduceConsumeTest.consumer()) {
            assertEquals(Map.of(tp0, 0L, tp1, 0L), c.beginningOffsets(List.of(tp0, tp1)));
            assertEquals(Map.of(tp0, 30L, tp1, 0L), c.endOffsets(List.of(tp0, tp1)));
            Map<TopicPartition, OffsetAndTimestamp> r = c.offsetsForTimes(Map.of(tp0, BASE_TS + 4500));
            assertEquals(5, r.get(tp0).offset());
            assertEquals(BASE_TS + 5000, r.get(tp0).timestamp());
        }
    }
}
