package rabbitmq

import (
	"bytes"
	"fmt"
	"testing"
)

// BenchmarkDecodePromCounts is the exporter's side of a read through
// rabbitmq_prometheus at 1,000 Dramatiq queues (3,000 RabbitMQ queues).
func BenchmarkDecodePromCounts(b *testing.B) {
	var qs [][4]any
	for i := range 1000 {
		for _, s := range []string{"", ".DQ", ".XQ"} {
			qs = append(qs, [4]any{fmt.Sprintf("queue_%05d%s", i, s), 3, 0, 0})
		}
	}
	text := []byte(promText("/", qs...))
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		queues, _, err := decodePromCounts(bytes.NewReader(text), "/", 100_000)
		if err != nil || len(queues) != 3000 {
			b.Fatal(err)
		}
	}
}
