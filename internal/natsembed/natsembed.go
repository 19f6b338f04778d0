package natsembed

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Config says where and how the embedded server runs.
type Config struct {
	// Dir is the JetStream storage directory. Required.
	Dir string
	// Host is the address to listen on. Default 127.0.0.1.
	Host string
	// Port is the client port; -1 (the default when 0) picks a free one.
	Port int
	// ServerName names the server in logs and in JetStream. Default "perch-dev".
	ServerName string
	// Logger receives the server's notices and errors. Default slog.Default().
	Logger *slog.Logger
	// StartTimeout bounds how long Start waits for the server to accept clients. Default 10s.
	StartTimeout time.Duration
	// User and Password, when set, are the credentials every client must present.
	User, Password string
}

// Server is a running embedded NATS server.
type Server struct {
	ns *server.Server
}

// Start starts the server and waits until it accepts connections.
func Start(cfg Config) (*Server, error) {
	if cfg.Dir == "" {
		return nil, errors.New("natsembed: Dir is required")
	}
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.Port == 0 {
		cfg.Port = server.RANDOM_PORT
	}
	if cfg.ServerName == "" {
		cfg.ServerName = "perch-dev"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 10 * time.Second
	}
	opts := &server.Options{
		ServerName: cfg.ServerName,
		Host:       cfg.Host,
		Port:       cfg.Port,
		JetStream:  true,
		StoreDir:   cfg.Dir,
		SyncAlways: true,
		NoSigs:     true,
		// Batches of writes can be large; the edge caps them well below this.
		MaxPayload: 8 << 20,
		Username:   cfg.User,
		Password:   cfg.Password,
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsembed: %w", err)
	}
	ns.SetLoggerV2(&logger{l: cfg.Logger.With("component", "nats")}, false, false, false)
	ns.Start()
	if !ns.ReadyForConnections(cfg.StartTimeout) {
		ns.Shutdown()
		return nil, fmt.Errorf("natsembed: server not ready after %s", cfg.StartTimeout)
	}
	return &Server{ns: ns}, nil
}

// URL is the client URL to connect to.
func (s *Server) URL() string { return s.ns.ClientURL() }

// Shutdown stops the server and waits until it has stopped. Safe to call more than once.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}

// logger adapts the server's logger interface to slog. Notices are Info, warnings Warn; debug
// and trace are off.
type logger struct{ l *slog.Logger }

func (g *logger) Noticef(format string, v ...any) { g.l.Debug(fmt.Sprintf(format, v...)) }
func (g *logger) Warnf(format string, v ...any)   { g.l.Warn(fmt.Sprintf(format, v...)) }
func (g *logger) Fatalf(format string, v ...any)  { g.l.Error(fmt.Sprintf(format, v...)) }
func (g *logger) Errorf(format string, v ...any)  { g.l.Error(fmt.Sprintf(format, v...)) }
func (g *logger) Debugf(format string, v ...any)  { g.l.Debug(fmt.Sprintf(format, v...)) }
func (g *logger) Tracef(format string, v ...any)  { g.l.Debug(fmt.Sprintf(format, v...)) }
