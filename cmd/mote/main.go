// Command mote is the Mote MQTT broker.
//
//	mote serve [flags]     run the broker
//	mote bench SCENARIO    load-test a broker (mote bench --help)
//	mote version           print the version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/term"

	"github.com/motemq/mote/bench"
	"github.com/motemq/mote/broker"
	"github.com/motemq/mote/listen"
)

const usage = `Mote is an MQTT 3.1.1 and 5.0 broker.

Usage:
  mote serve [flags]          run the broker (mote serve --help for flags)
  mote serve --check-config FILE
                              validate a configuration file and exit
  mote bench SCENARIO [flags] load-test a broker (pubsub, latency, conns, queue)
  mote passwd [--password-stdin | --delete] FILE USER
                              set (prompting) or delete a user's bcrypt password in a password file
  mote version                print the version
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run returns the process exit code: 0 ok, 1 runtime failure (a port in
// use, a damaged store), 2 usage or configuration error.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return serve(args[1:], stdout, stderr)
	case "bench":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		err := bench.Main(ctx, args[1:], stdout)
		var ue *bench.UsageError
		switch {
		case err == nil:
			return 0
		case errors.As(err, &ue):
			fmt.Fprintln(stderr, err)
			return 2
		default:
			fmt.Fprintln(stderr, err)
			return 1
		}
	case "passwd":
		return passwd(args[1:], os.Stdin, stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintf(stdout, "mote %s\n", broker.Version)
		return 0
	case "help", "--help", "-help", "-h":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "mote: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}

// optString is a string flag that remembers whether it was set, so an
// explicitly empty address can turn a listener off.
type optString struct{ v *string }

func (o *optString) String() string {
	if o.v == nil {
		return ""
	}
	return *o.v
}
func (o *optString) Set(s string) error { o.v = &s; return nil }

func serve(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mote serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var config, dataDir, mqttAddr, wsAddr, httpAddr, level, fsync optString
	var check, pprofAddr string
	fs.Var(&config, "config", "YAML configuration file (env MOTE_CONFIG)")
	fs.Var(&dataDir, "data-dir", "data directory (env MOTE_DATA_DIR; default ./data)")
	fs.Var(&mqttAddr, "mqtt", `MQTT listener address; "" turns it off (env MOTE_MQTT; default :1883)`)
	fs.Var(&wsAddr, "ws", `MQTT-over-WebSocket listener address (env MOTE_WS; default :8083)`)
	fs.Var(&httpAddr, "http", `HTTP listener address for /healthz, /readyz and the publish API (env MOTE_HTTP; default :8080)`)
	fs.Var(&level, "log-level", "debug, info, warn or error (env MOTE_LOG_LEVEL; default info)")
	fs.Var(&fsync, "fsync", "always or everysec (env MOTE_FSYNC; default always)")
	fs.StringVar(&check, "check-config", "", "validate this configuration file, print what is wrong and exit")
	fs.StringVar(&pprofAddr, "pprof", "", "serve Go's profiler (net/http/pprof) on this `address`, e.g. 127.0.0.1:6060; off by default")
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: mote serve [flags]\n\nFlags override the environment, which overrides the file.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "mote serve: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if check != "" {
		data, err := os.ReadFile(check)
		if err != nil {
			fmt.Fprintf(stderr, "config: %v\n", err)
			return 2
		}
		if _, err := broker.ParseConfig(check, data); err != nil {
			fmt.Fprintln(stderr, err)
			return 2
		}
		fmt.Fprintf(stdout, "config: %s is valid\n", check)
		return 0
	}
	flags := broker.Overrides{
		Config: config.v, DataDir: dataDir.v, MQTT: mqttAddr.v, WS: wsAddr.v,
		HTTP: httpAddr.v, LogLevel: level.v, Fsync: fsync.v,
	}
	cfg, err := broker.LoadConfig(flags, broker.EnvOverrides(os.LookupEnv))
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	log := newLogger(cfg.Log, stderr)
	b, err := broker.New(cfg, log)
	if err != nil {
		log.Error("cannot start", "error", err)
		fmt.Fprintln(stderr, "mote:", err)
		if errors.Is(err, listen.ErrAddressInUse) {
			return 1
		}
		return 1
	}
	if pprofAddr != "" {
		stopProfiler, err := serveProfiler(pprofAddr, log)
		if err != nil {
			fmt.Fprintf(stderr, "mote: --pprof %s: %v\n", pprofAddr, err)
			return 2
		}
		defer stopProfiler()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// SIGHUP reloads the users and ACL files, the rules file and the enrich tables.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	reloaded := make(chan struct{})
	go func() {
		defer close(reloaded)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				log.Info("SIGHUP: reloading users, ACL, rules and enrich tables")
				_ = b.Reload() // logs its own outcome
			}
		}
	}()
	defer func() { signal.Stop(hup); stop(); <-reloaded }()
	if err := b.Run(ctx); err != nil {
		fmt.Fprintln(stderr, "mote:", err)
		return 1
	}
	return 0
}

func newLogger(c broker.LogConfig, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level)) // validated by LoadConfig
	opts := &slog.HandlerOptions{Level: level}
	format := c.Format
	if format == "auto" {
		format = "json"
		if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			format = "text"
		}
	}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
