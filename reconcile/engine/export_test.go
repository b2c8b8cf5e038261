package engine

import (
	"testing"
	"time"
)

// FastEventsForTest shortens the reconnect backoff for a test.
func FastEventsForTest(t *testing.T) {
	t.Helper()
	minB, maxB, stable := eventsBackoffMin, eventsBackoffMax, eventsStable
	eventsBackoffMin, eventsBackoffMax, eventsStable = time.Millisecond, 10*time.Millisecond, time.Hour
	t.Cleanup(func() { eventsBackoffMin, eventsBackoffMax, eventsStable = minB, maxB, stable })
}
