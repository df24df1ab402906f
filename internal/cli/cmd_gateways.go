package cli

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/airlockpam/airlock/internal/gateway"
	"github.com/airlockpam/airlock/internal/version"
)

type gatewayInfo struct {
	ID                  string     `json:"id"`
	Name                string     `json:"name"`
	Online              bool       `json:"online"`
	Enrolled            bool       `json:"enrolled"`
	LastHeartbeatAt     *time.Time `json:"lastHeartbeatAt,omitempty"`
	RemoteAddr          string     `json:"remoteAddr,omitempty"`
	CreatedAt           time.Time  `json:"createdAt"`
	EnrollmentToken     string     `json:"enrollmentToken,omitempty"`
	EnrollmentExpiresAt *time.Time `json:"enrollmentExpiresAt,omitempty"`
}

func (o *options) printEnrollment(g gatewayInfo, domain string) error {
	if o.output == "json" {
		return o.printJSON(g)
	}
	fmt.Fprintf(o.stdout, "Gateway %s (%s) registered.\n\n", g.Name, g.ID)
	fmt.Fprintf(o.stdout, "Enrollment token (one use, valid until %s):\n\n%s\n\n", fmtTime(*g.EnrollmentExpiresAt), g.EnrollmentToken)
	fmt.Fprintf(o.stdout, "On a machine that can reach your databases, run:\n\n  airlock gateway --domain %s --token %s --data-dir /var/lib/airlock-gateway\n", domain, g.EnrollmentToken)
	return nil
}

func newGatewaysCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{Use: "gateways", Short: "Register and list gateways"}
	create := &cobra.Command{
		Use: "create NAME", Short: "Register a gateway and print its one-time enrollment token (organization admins)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := loggedInClient()
			if err != nil {
				return err
			}
			var g gatewayInfo
			if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/gateways", nil, map[string]string{"name": args[0]}, &g); err != nil {
				return err
			}
			return o.printEnrollment(g, c.base)
		},
	}
	token := &cobra.Command{
		Use: "enrollment-token NAME", Short: "Issue a new enrollment token for a gateway (to re-enroll it)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := loggedInClient()
			if err != nil {
				return err
			}
			var g gatewayInfo
			if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/gateways/"+url.PathEscape(args[0])+"/enrollment-token", nil, nil, &g); err != nil {
				return err
			}
			return o.printEnrollment(g, c.base)
		},
	}
	list := &cobra.Command{
		Use: "list", Short: "List gateways, online or offline, with their last heartbeat", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loggedInClient()
			if err != nil {
				return err
			}
			var gs []gatewayInfo
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/gateways", nil, nil, &gs); err != nil {
				return err
			}
			rows := make([][]string, 0, len(gs))
			for _, g := range gs {
				status := "offline"
				switch {
				case !g.Enrolled:
					status = "not enrolled"
				case g.Online:
					status = "online"
				}
				hb := "-"
				if g.LastHeartbeatAt != nil {
					hb = fmtTime(*g.LastHeartbeatAt)
				}
				rows = append(rows, []string{g.Name, g.ID, status, hb, g.RemoteAddr})
			}
			return o.printTable(gs, []string{"NAME", "ID", "STATUS", "LAST HEARTBEAT", "ADDRESS"}, rows)
		},
	}
	del := &cobra.Command{
		Use: "delete NAME", Short: "Delete a gateway (organization admins)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := loggedInClient()
			if err != nil {
				return err
			}
			if err := c.do(cmd.Context(), http.MethodDelete, "/api/v1/gateways/"+url.PathEscape(args[0]), nil, nil, nil); err != nil {
				return err
			}
			fmt.Fprintln(o.stdout, "Deleted.")
			return nil
		},
	}
	cmd.AddCommand(create, token, list, del)
	return cmd
}

func newGatewayCommand(o *options) *cobra.Command {
	var domain, token, dataDir, caFile string
	cmd := &cobra.Command{
		Use:   "gateway",
		Short: "Run a gateway in the database's network",
		Long: `Run an Airlock gateway.

The first run enrolls with a one-time token from ` + "`airlock gateways create NAME`" + `: the
gateway makes its own key pair in --data-dir, sends a certificate request, and
stores the certificate it gets back; its private key never leaves that
directory. Later runs with the same --data-dir need no token.

The gateway then dials out to the server and keeps one connection open; it
needs no inbound port. It must be able to reach the databases of its resources.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dataDir == "" {
				d, err := stateDir()
				if err != nil {
					return err
				}
				dataDir = filepath.Join(d, "airlock", "gateway")
			}
			var serverTLS *tls.Config
			hc, err := newHTTPClient(caFile)
			if err != nil {
				return err
			}
			if tr, ok := hc.Transport.(*http.Transport); ok {
				serverTLS = tr.TLSClientConfig
			}
			id, err := gateway.LoadIdentity(dataDir)
			switch {
			case errors.Is(err, fs.ErrNotExist):
				base, err := normalizeDomain(domain)
				if err != nil {
					return err
				}
				if id, err = gateway.Enroll(cmd.Context(), base, token, dataDir, hc); err != nil {
					return err
				}
				slog.Info("enrolled", "gateway", id.Name, "id", id.GatewayID, "dataDir", dataDir)
			case err != nil:
				return err
			case token != "":
				slog.Info("already enrolled in this data directory; ignoring --token", "gateway", id.Name)
			}
			if domain != "" {
				if base, err := normalizeDomain(domain); err == nil && base != id.Domain {
					slog.Info("using --domain instead of the enrolled one", "domain", base)
					id.Domain = base
				}
			}
			a, err := gateway.New(gateway.Config{Identity: id, ServerTLS: serverTLS, Version: version.Version, SpoolDir: filepath.Join(dataDir, "spool")})
			if err != nil {
				return err
			}
			defer a.Close()
			return a.Run(cmd.Context())
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&domain, "domain", "", "the Airlock server, e.g. https://airlock.example.com")
	fl.StringVar(&token, "token", "", "one-time enrollment token (first run only)")
	fl.StringVar(&dataDir, "data-dir", "", "where the gateway keeps its key and certificate (default ~/.local/state/airlock/gateway)")
	fl.StringVar(&caFile, "ca-file", "", "PEM CA certificate of the server's TLS certificate, when it is not publicly trusted")
	return cmd
}
