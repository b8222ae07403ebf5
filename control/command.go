package control

import (
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/meridian-cdn/meridian/purge"
)

// NewCommand returns the `meridian control` command.
func NewCommand() *cobra.Command {
	var cfg Config
	var verbose bool
	cmd := &cobra.Command{
		Use:   "control",
		Short: "Run the control plane: embedded NATS, fleet registry, config store and HTTP API",
		Long: `Run the control plane. Without --nats it embeds a NATS server with JetStream
(listening on --nats-listen, storing in --store-dir); with --nats it uses an existing NATS
server or cluster. It creates the fleet and config buckets (idempotently) and serves the
authenticated HTTP API on --listen: over HTTPS with --tls-cert and --tls-key (reloaded when the
files change), in plain HTTP only on a loopback address unless --insecure-http. API tokens come
from --tokens or $` + TokensFileEnv + ` (a file only its owner may read).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			level := slog.LevelInfo
			if verbose {
				level = slog.LevelDebug
			}
			cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			s, err := New(cfg)
			if err != nil {
				return err
			}
			return s.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Listen, "listen", DefaultListen, "HTTP API address")
	f.StringVar(&cfg.NATSURL, "nats", "", "existing NATS server or cluster URL(s); empty runs an embedded NATS server")
	f.StringVar(&cfg.NATSCreds, "nats-creds", "", "credentials file for --nats (the embedded server's credentials live in --store-dir)")
	f.StringVar(&cfg.NATSListen, "nats-listen", DefaultNATSListen, "embedded NATS client address")
	f.StringVar(&cfg.StoreDir, "store-dir", DefaultStoreDir, "embedded NATS JetStream storage directory")
	f.StringVar(&cfg.TokensFile, "tokens", "", "API tokens file, mode 0600 (default $"+TokensFileEnv+")")
	f.StringVar(&cfg.TLSCert, "tls-cert", "", "API TLS certificate file (PEM), reloaded when it changes")
	f.StringVar(&cfg.TLSKey, "tls-key", "", "API TLS key file (PEM), reloaded when it changes")
	f.BoolVar(&cfg.InsecureHTTP, "insecure-http", false, "allow plain HTTP on a non-loopback --listen (behind a TLS proxy)")
	f.StringSliceVar(&cfg.TrustedProxies, "trusted-proxies", nil, "CIDRs or IPs of proxies in front of the API whose X-Forwarded-For names the client (comma-separated, spaces after commas allowed, or repeated)")
	f.BoolVar(&cfg.InsecureNATS, "insecure-nats", false, "allow the embedded NATS server (no TLS) on a non-loopback --nats-listen (an encrypted private network)")
	f.StringVar(&cfg.Prefix, "prefix", "", "NATS bucket and subject prefix (default \"meridian\")")
	f.DurationVar(&cfg.HeartbeatTTL, "heartbeat-ttl", 0, "how long a node stays in the fleet after its last heartbeat (default 3s)")
	f.IntVar(&cfg.Replicas, "replicas", 1, "JetStream replicas for the buckets (3 on a three-node cluster)")
	f.IntVar(&cfg.MaxConsumers, "max-consumers", DefaultMaxConsumers, "consumers each of the fleet's streams may have, whoever made them (at least 4 per process of the fleet)")
	f.Int64Var(&cfg.LatencyMaxBytes, "latency-max-bytes", 0, "bytes the latency bucket may hold, applied at every start; 0 keeps the bucket's bound (64 MiB for a new one)")
	f.DurationVar(&cfg.PurgeRetention, "purge-retention", purge.DefaultRetention, "how long the purge stream keeps purges for nodes to replay, and receipts")
	f.Float64Var(&cfg.PurgeRate, "purge-rate", DefaultPurgeRate, "purges per second per token; a refused request spends none (negative: unlimited)")
	f.IntVar(&cfg.PurgeBurst, "purge-burst", DefaultPurgeBurst, "purge requests a token may make at once")
	f.Int64Var(&cfg.MaxBodyBytes, "max-body-bytes", DefaultMaxBodyBytes, "request body size limit")
	f.BoolVarP(&verbose, "verbose", "v", false, "log at debug level")
	cmd.AddCommand(newCredsCommand())
	return cmd
}
