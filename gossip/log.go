package gossip

import (
	"context"
	"log/slog"
	"strings"
)

// logWriter turns memberlist's log lines ("[WARN] memberlist: text") into
// debug records of an slog.Logger, keeping memberlist's severity as the
// attribute memberlist_level. Safe for concurrent use.
type logWriter struct {
	l *slog.Logger
}

func (w logWriter) Write(p []byte) (int, error) {
	if !w.l.Enabled(context.Background(), slog.LevelDebug) {
		return len(p), nil
	}
	level, msg := parseMemberlistLine(string(p))
	w.l.Debug(msg, slog.String("memberlist_level", level))
	return len(p), nil
}

// parseMemberlistLine splits "[LEVEL] memberlist: message\n" into LEVEL and
// message; a line without a level gives "".
func parseMemberlistLine(line string) (level, msg string) {
	msg = strings.TrimSpace(line)
	if strings.HasPrefix(msg, "[") {
		if i := strings.IndexByte(msg, ']'); i > 0 {
			level, msg = msg[1:i], strings.TrimSpace(msg[i+1:])
		}
	}
	msg = strings.TrimPrefix(msg, "memberlist: ")
	return level, msg
}
