package main

// The gateway's WARN and ERROR log lines during a soak.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// logCollector keeps the gateway's WARN and ERROR lines: counts by
// message, and the most recent lines to show next to unexpected answers.
type logCollector struct {
	mu      sync.Mutex
	counts  map[string]int
	recent  [][]byte
	next    int
	watched map[string][]string // request id → its lines, for the examples
}

// logKeep bounds the recent lines kept (to find the lines an example's
// request wrote before it was watched); small, so that it is full early in
// the warm-up and does not grow the heap between the two samples.
const logKeep = 512

func newLogCollector() *logCollector {
	return &logCollector{counts: map[string]int{}, watched: map[string][]string{}}
}

// watch keeps every WARN and ERROR line of a request id, those already
// seen and those to come (the access line is written after the answer).
func (l *logCollector) watch(id string) {
	if id == "" {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.watched[id]; ok {
		return
	}
	var lines []string
	for _, p := range l.recent {
		if bytes.Contains(p, []byte(id)) {
			lines = append(lines, string(p))
		}
	}
	l.watched[id] = lines
}

var (
	levelWarn  = []byte(`"level":"WARN"`)
	levelError = []byte(`"level":"ERROR"`)
)

func (l *logCollector) Write(p []byte) (int, error) {
	if !bytes.Contains(p, levelError) && !bytes.Contains(p, levelWarn) {
		return len(p), nil
	}
	var line struct {
		Level     string `json:"level"`
		Msg       string `json:"msg"`
		Status    int    `json:"status"`
		Error     string `json:"error"`
		RequestID string `json:"request_id"`
	}
	json.Unmarshal(p, &line)
	key := line.Level + " " + strconv.Quote(line.Msg)
	if line.Status != 0 {
		key += " status=" + strconv.Itoa(line.Status)
	}
	if line.Error != "" {
		key += " error=" + strconv.Quote(shortenError(line.Error))
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.counts[key]++
	c := bytes.Clone(bytes.TrimSpace(p))
	if lines, ok := l.watched[line.RequestID]; ok {
		l.watched[line.RequestID] = append(lines, string(c))
	}
	if len(l.recent) < logKeep {
		l.recent = append(l.recent, c)
	} else {
		l.recent[l.next] = c
		l.next = (l.next + 1) % logKeep
	}
	return len(p), nil
}

// Parts of error messages that differ from line to line: durations
// ("within 1.99999975s"), addresses with their ports, user ids.
var (
	durationText = regexp.MustCompile(`\b[0-9]+(\.[0-9]+)?(ns|µs|ms|s|m|h)\b`)
	addressText  = regexp.MustCompile(`\b[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+:[0-9]+\b`)
	idText       = regexp.MustCompile(`\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b`)
)

// shortenError keeps an error message countable.
func shortenError(e string) string {
	if i := strings.Index(e, "request id"); i >= 0 {
		e = e[:i]
	}
	e = addressText.ReplaceAllString(e, "<addr>")
	e = idText.ReplaceAllString(e, "<id>")
	e = durationText.ReplaceAllString(e, "<duration>")
	if len(e) > 160 {
		e = e[:160] + "…"
	}
	return e
}

// lines returns the lines of a watched request id.
func (l *logCollector) lines(id string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.watched[id])
}

// summary lists the counts, most frequent first.
func (l *logCollector) summary() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	keys := make([]string, 0, len(l.counts))
	for k := range l.counts {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if l.counts[keys[i]] != l.counts[keys[j]] {
			return l.counts[keys[i]] > l.counts[keys[j]]
		}
		return keys[i] < keys[j]
	})
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, fmt.Sprintf("%7d  %s", l.counts[k], k))
	}
	if len(out) == 0 {
		out = append(out, "(none)")
	}
	return out
}
