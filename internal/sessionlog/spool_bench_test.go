package sessionlog

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
)

// BenchmarkSpoolRecord measures what recording one statement's event costs
// a session, with the default batched fsync and with --spool-sync=always
// (each Record waits until its event is fsynced), for one recording
// goroutine and for 16 at once (concurrent sessions share each fsync). The
// batched figures include writing and fsyncing every event (a Flush at the
// end), amortized over the events.
//
//	go test ./internal/sessionlog -run '^$' -bench BenchmarkSpoolRecord -benchtime 2s
func BenchmarkSpoolRecord(b *testing.B) {
	for _, mode := range []struct {
		name   string
		always bool
	}{{"batch", false}, {"always", true}} {
		for _, par := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/recorders=%d", mode.name, par), func(b *testing.B) {
				sp, err := OpenSpool(b.TempDir(), WithSyncAlways(mode.always))
				if err != nil {
					b.Fatal(err)
				}
				defer sp.Close()
				var n atomic.Int64
				b.ResetTimer()
				if par == 1 {
					for i := range b.N {
						sp.Record(testEvent("bench", 0, i))
					}
				} else {
					b.SetParallelism((par + 1) / 2) // GOMAXPROCS is 2 here
					b.RunParallel(func(pb *testing.PB) {
						g := int(n.Add(1))
						for i := 0; pb.Next(); i++ {
							sp.Record(testEvent("bench", g, i))
						}
					})
				}
				if err := sp.Flush(context.Background()); err != nil {
					b.Fatal(err)
				}
			})
		}
	}
}
