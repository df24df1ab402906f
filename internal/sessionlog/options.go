package sessionlog

import (
	"log/slog"
	"time"
)

// Spool defaults.
const (
	DefaultFlushInterval   = 50 * time.Millisecond
	DefaultWriteBatch      = 1000
	DefaultMaxBufferEvents = 100_000
	DefaultMaxBufferBytes  = 64 << 20
	DefaultSegmentSize     = 8 << 20
	DefaultUploadEvents    = 500
	DefaultUploadBytes     = 1 << 20
	DefaultMinBackoff      = 100 * time.Millisecond
	DefaultMaxBackoff      = 10 * time.Second
)

// SpoolOption changes a setting of OpenSpool.
type SpoolOption func(*spoolConfig)

type spoolConfig struct {
	log             *slog.Logger
	flushInterval   time.Duration
	writeBatch      int
	maxBufferEvents int
	maxBufferBytes  int
	segmentSize     int64
	uploadEvents    int
	uploadBytes     int
	minBackoff      time.Duration
	maxBackoff      time.Duration
}

func defaultSpoolConfig() spoolConfig {
	return spoolConfig{
		log:             slog.Default(),
		flushInterval:   DefaultFlushInterval,
		writeBatch:      DefaultWriteBatch,
		maxBufferEvents: DefaultMaxBufferEvents,
		maxBufferBytes:  DefaultMaxBufferBytes,
		segmentSize:     DefaultSegmentSize,
		uploadEvents:    DefaultUploadEvents,
		uploadBytes:     DefaultUploadBytes,
		minBackoff:      DefaultMinBackoff,
		maxBackoff:      DefaultMaxBackoff,
	}
}

// WithLogger sends the spool's log lines (write errors, upload retries,
// damaged files) to l instead of slog.Default(). No line holds statement
// text: events are named by id and session.
func WithLogger(l *slog.Logger) SpoolOption {
	return func(c *spoolConfig) {
		if l != nil {
			c.log = l
		}
	}
}

// WithFlushInterval sets how long recorded events may wait in memory before
// they are written and fsynced as one batch. Default 50 ms.
func WithFlushInterval(d time.Duration) SpoolOption {
	return func(c *spoolConfig) {
		if d > 0 {
			c.flushInterval = d
		}
	}
}

// WithWriteBatch sets how many buffered events make the writer write at
// once, without waiting for the flush interval. Default 1,000.
func WithWriteBatch(events int) SpoolOption {
	return func(c *spoolConfig) {
		if events > 0 {
			c.writeBatch = events
		}
	}
}

// WithMaxBuffer bounds the events held in memory before they are on disk:
// when the buffer holds this many events, or this many bytes (estimated from
// the events' text), Record waits until the writer has taken the buffer. An
// event larger than the byte bound is still taken when the buffer is empty.
// Defaults 100,000 events and 64 MiB.
func WithMaxBuffer(events, bytes int) SpoolOption {
	return func(c *spoolConfig) {
		if events > 0 {
			c.maxBufferEvents = events
		}
		if bytes > 0 {
			c.maxBufferBytes = bytes
		}
	}
}

// WithSegmentSize sets the size, in bytes, after which the writer starts a
// new segment file. Acknowledged segments are removed whole, so this is also
// roughly how much acknowledged data the spool may keep. Default 8 MiB.
func WithSegmentSize(bytes int64) SpoolOption {
	return func(c *spoolConfig) {
		if bytes > 0 {
			c.segmentSize = bytes
		}
	}
}

// WithUploadBatch bounds one Upload call: at most this many events and about
// this many bytes of encoded events (a single larger event is sent alone).
// Defaults 500 events and 1 MiB.
func WithUploadBatch(events, bytes int) SpoolOption {
	return func(c *spoolConfig) {
		if events > 0 {
			c.uploadEvents = events
		}
		if bytes > 0 {
			c.uploadBytes = bytes
		}
	}
}

// WithBackoff sets the wait after a failed upload (min) and the most it
// doubles to (max). The same backoff applies to failed disk writes. Defaults
// 100 ms and 10 s.
func WithBackoff(min, max time.Duration) SpoolOption {
	return func(c *spoolConfig) {
		if min > 0 {
			c.minBackoff = min
		}
		if max > 0 {
			c.maxBackoff = max
		}
		if c.maxBackoff < c.minBackoff {
			c.maxBackoff = c.minBackoff
		}
	}
}
