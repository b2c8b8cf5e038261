package bed

import (
	"bufio"
	"fmt"
	"strings"
	"testing"
	"time"

	"swarmvlan/lab"
)

// Figure logs a measured figure in a form easy to grep from the test log.
func Figure(t testing.TB, name string, d time.Duration) {
	t.Helper()
	lab.Figure(t, name, d.Round(10*time.Millisecond).String())
}

// LogTime is the time= field of a reconciler log line (slog's text format).
func LogTime(line string) (time.Time, bool) {
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, "time="); ok {
			t, err := time.Parse(time.RFC3339Nano, v)
			return t, err == nil
		}
	}
	return time.Time{}, false
}

// LogLines returns the lines of log whose msg is msg.
func LogLines(log, msg string) []string {
	var out []string
	quoted := fmt.Sprintf("msg=%q", msg)
	plain := "msg=" + msg + " "
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		l := sc.Text()
		if strings.Contains(l, quoted) || strings.Contains(l, plain) || strings.HasSuffix(l, "msg="+msg) {
			out = append(out, l)
		}
	}
	return out
}

// LastLines returns the last n lines of s.
func LastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
