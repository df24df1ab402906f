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

// BenchmarkSpoolStatement measures what recording one statement
// write-ahead costs a session: Begin (its start record written before the
// statement is forwarded) and Record (its final event, when the answer
// comes), with batched fsync and with --spool-sync=always (Begin waits for
// an fsync of its start, Record for one of its final event), for one
// session and for 16 at once. As in BenchmarkSpoolRecord, the batched
// figures include writing and fsyncing everything (a Flush at the end).
//
//	go test ./internal/sessionlog -run '^$' -bench BenchmarkSpoolStatement -benchtime 2s
func BenchmarkSpoolStatement(b *testing.B) {
	for _, mode := range []struct {
		name   string
		always bool
	}{{"batch", false}, {"always", true}} {
		for _, par := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/sessions=%d", mode.name, par), func(b *testing.B) {
				sp, err := OpenSpool(b.TempDir(), WithSyncAlways(mode.always))
				if err != nil {
					b.Fatal(err)
				}
				defer sp.Close()
				statement := func(g, i int) error {
					if err := sp.Begin(startOf("bench", g, i)); err != nil {
						return err
					}
					sp.Record(finalOf("bench", g, i))
					return nil
				}
				var n atomic.Int64
				b.ResetTimer()
				if par == 1 {
					for i := range b.N {
						if err := statement(0, i); err != nil {
							b.Fatal(err)
						}
					}
				} else {
					b.SetParallelism((par + 1) / 2) // GOMAXPROCS is 2 here
					b.RunParallel(func(pb *testing.PB) {
						g := int(n.Add(1))
						for i := 0; pb.Next(); i++ {
							if err := statement(g, i); err != nil {
								b.Error(err)
								return
							}
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
