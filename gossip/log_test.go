package gossip

import (
	"bytes"
	"log"
	"log/slog"
	"strings"
	"testing"
)

func TestParseMemberlistLine(t *testing.T) {
	tests := []struct {
		line, level, msg string
	}{
		{"[DEBUG] memberlist: Stream connection from=127.0.0.1:5\n", "DEBUG", "Stream connection from=127.0.0.1:5"},
		{"[WARN] memberlist: Refuting a suspect message (from: b)", "WARN", "Refuting a suspect message (from: b)"},
		{"[ERR] Failed to shutdown transport: x\n", "ERR", "Failed to shutdown transport: x"},
		{"no level here\n", "", "no level here"},
		{"[unterminated", "", "[unterminated"},
		{"", "", ""},
	}
	for _, tt := range tests {
		level, msg := parseMemberlistLine(tt.line)
		if level != tt.level || msg != tt.msg {
			t.Errorf("parseMemberlistLine(%q) = %q, %q; want %q, %q", tt.line, level, msg, tt.level, tt.msg)
		}
	}
}

func TestLogWriterRoutesToSlogAtDebug(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	log.New(logWriter{l}, "", 0).Printf("[WARN] memberlist: %s", "hello")
	got := buf.String()
	for _, want := range []string{"level=DEBUG", `msg=hello`, "memberlist_level=WARN"} {
		if !strings.Contains(got, want) {
			t.Errorf("log output %q lacks %q", got, want)
		}
	}

	buf.Reset()
	quiet := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	log.New(logWriter{quiet}, "", 0).Printf("[ERR] memberlist: dropped")
	if buf.Len() != 0 {
		t.Errorf("memberlist line logged above debug: %q", buf.String())
	}
}
