package cli

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/airlockpam/airlock/internal/appconn"
)

const appConnPath = "/api/v1/app-connections/postgres"

func (o *options) printAppConn(a *appconn.Connection) error {
	if a == nil {
		return errors.New("the server's answer holds no app connection")
	}
	via := "the server"
	if a.GatewayID != "" {
		via = "gateway " + a.GatewayID
	}
	return o.printObject(appconn.ConnectionResponse{AppConnection: a}, [][2]string{{"ID", a.ID}, {"Name", a.Name}, {"App", a.App}, {"Method", a.Method},
		{"Host", a.Credentials.Host}, {"Port", strconv.Itoa(a.Credentials.Port)}, {"Database", a.Credentials.Database},
		{"Username", a.Credentials.Username}, {"TLS", fmt.Sprintf("%v (verify: %v)", a.Credentials.SSLEnabled, a.Credentials.SSLRejectUnauthorized)},
		{"Platform-managed", fmt.Sprint(a.IsPlatformManagedCredentials)}, {"Connects from", via}, {"Version", strconv.Itoa(a.Version)},
		{"Error", orDash(a.Error)}, {"Created", fmtTime(a.CreatedAt)}, {"Updated", fmtTime(a.UpdatedAt)}})
}

// appConnByRef finds a project's connection by name, else by id.
func appConnByRef(cmd *cobra.Command, c *client, projectID, ref string) (*appconn.Connection, error) {
	var out appconn.ConnectionResponse
	err := c.do(cmd.Context(), http.MethodGet, appConnPath+"/connection-name/"+url.PathEscape(ref), url.Values{"projectId": {projectID}}, nil, &out)
	var ae *apiError
	if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
		err = c.do(cmd.Context(), http.MethodGet, appConnPath+"/"+url.PathEscape(ref), nil, nil, &out)
		if err == nil && (out.AppConnection == nil || out.AppConnection.ProjectID != projectID) {
			return nil, fmt.Errorf("no app connection %q in the project", ref)
		}
	}
	if err == nil && out.AppConnection == nil {
		err = errors.New("the server's answer holds no app connection")
	}
	return out.AppConnection, err
}

// appConnFlags are the connection settings given on the command line.
type appConnFlags struct {
	host, database, username, caFile, gateway, description string
	port                                                   int
	ssl, verify, passwordStdin, platformManaged            bool
}

func (f *appConnFlags) bind(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.host, "host", "", "the PostgreSQL server's host name or IP address")
	fl.IntVar(&f.port, "port", 5432, "its port")
	fl.StringVar(&f.database, "database", "", "the database to log in to")
	fl.StringVar(&f.username, "username", "", "the database user")
	fl.BoolVar(&f.passwordStdin, "password-stdin", false, "read the user's password from standard input")
	fl.BoolVar(&f.ssl, "ssl", true, "use TLS")
	fl.BoolVar(&f.verify, "ssl-reject-unauthorized", true, "verify the server's certificate and host name")
	fl.StringVar(&f.caFile, "ssl-ca-file", "", "PEM file of the CA to trust for the server instead of the system roots")
	fl.StringVar(&f.gateway, "gateway", "", "log in through this gateway (name or id) instead of from the server")
	fl.StringVar(&f.description, "description", "", "what the connection is for")
}

func (f *appConnFlags) credentials(o *options, needPassword bool) (appconn.Credentials, error) {
	creds := appconn.Credentials{Host: f.host, Port: f.port, Database: f.database, Username: f.username,
		SSLEnabled: f.ssl, SSLRejectUnauthorized: f.verify}
	if f.caFile != "" {
		pem, err := os.ReadFile(f.caFile)
		if err != nil {
			return creds, fmt.Errorf("reading --ssl-ca-file: %w", err)
		}
		creds.SSLCertificate = string(pem)
	}
	if needPassword && !f.passwordStdin {
		return creds, errors.New("the password is read from standard input: add --password-stdin and pipe it in")
	}
	if f.passwordStdin {
		pw, err := o.readStdinSecret("Password")
		if err != nil {
			return creds, err
		}
		creds.Password = pw
	}
	return creds, nil
}

func newAppConnectionsCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{Use: "app-connections", Aliases: []string{"app-connection"},
		Short: "Manage app connections: the server's own logins to a database, for secret rotations"}
	var projectID, name string
	cmd.PersistentFlags().StringVar(&projectID, "project-id", "", "the project's id or name")

	var f appConnFlags
	create := &cobra.Command{
		Use: "create postgres", Short: "Add a PostgreSQL connection; the server logs in with it first (project admins)", Args: cobra.ExactArgs(1),
		Example: "  printf '%s' \"$PW\" | airlock app-connections create postgres --project-id P --name orders-db \\\n" +
			"    --host db.example.com --database orders --username airlock_rotator --password-stdin --platform-managed",
		RunE: func(cmd *cobra.Command, args []string) error {
			if args[0] != "postgres" {
				return fmt.Errorf("the app is postgres, not %q", args[0])
			}
			creds, err := f.credentials(o, true)
			if err != nil {
				return err
			}
			c, err := projectClient(cmd.Context(), &projectID)
			if err != nil {
				return err
			}
			body := appconn.ConnectionInput{Name: name, Method: "username-and-password", IsPlatformManagedCredentials: f.platformManaged,
				ProjectID: projectID, Credentials: creds, Description: f.description, GatewayID: f.gateway}
			var out appconn.ConnectionResponse
			if err := c.do(cmd.Context(), http.MethodPost, appConnPath, nil, body, &out); err != nil {
				return err
			}
			return o.printAppConn(out.AppConnection)
		},
	}
	f.bind(create)
	create.Flags().StringVar(&name, "name", "", "a slug such as orders-db")
	create.Flags().BoolVar(&f.platformManaged, "platform-managed", false, "give the user a new random password only the server knows")
	for _, fl := range []string{"name", "host", "database", "username"} {
		_ = create.MarkFlagRequired(fl)
	}

	list := &cobra.Command{
		Use: "list", Short: "List the project's app connections", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := projectClient(cmd.Context(), &projectID)
			if err != nil {
				return err
			}
			var out appconn.ConnectionList
			if err := c.do(cmd.Context(), http.MethodGet, appConnPath, url.Values{"projectId": {projectID}}, nil, &out); err != nil {
				return err
			}
			rows := make([][]string, 0, len(out.AppConnections))
			for _, a := range out.AppConnections {
				rows = append(rows, []string{a.ID, a.Name, a.App, a.Credentials.Host + ":" + strconv.Itoa(a.Credentials.Port), a.Credentials.Database,
					a.Credentials.Username, fmt.Sprint(a.IsPlatformManagedCredentials), fmtTime(a.UpdatedAt)})
			}
			return o.printTable(out, []string{"ID", "NAME", "APP", "ADDRESS", "DATABASE", "USERNAME", "PLATFORM-MANAGED", "UPDATED"}, rows)
		},
	}
	get := &cobra.Command{
		Use: "get NAME|ID", Short: "Show an app connection", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := projectClient(cmd.Context(), &projectID)
			if err != nil {
				return err
			}
			a, err := appConnByRef(cmd, c, projectID, args[0])
			if err != nil {
				return err
			}
			return o.printAppConn(a)
		},
	}
	var uf appConnFlags
	var newName string
	update := &cobra.Command{
		Use: "update NAME|ID", Short: "Change an app connection; new settings log in first (project admins)", Args: cobra.ExactArgs(1),
		Long: "Change an app connection. --name and --description change alone; any of the connection flags sends all of them " +
			"(the ones not given keep their current values) and the server logs in before saving. The password is kept unless " +
			"--password-stdin gives a new one. A platform-managed connection's settings cannot change.",
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := projectClient(cmd.Context(), &projectID)
			if err != nil {
				return err
			}
			a, err := appConnByRef(cmd, c, projectID, args[0])
			if err != nil {
				return err
			}
			fl := cmd.Flags()
			var body appconn.ConnectionUpdate
			if fl.Changed("name") {
				body.Name = &newName
			}
			if fl.Changed("description") {
				body.Description = &uf.description
			}
			if fl.Changed("gateway") {
				body.GatewayID = &uf.gateway
			}
			changed := false
			for _, n := range []string{"host", "port", "database", "username", "password-stdin", "ssl", "ssl-reject-unauthorized", "ssl-ca-file"} {
				changed = changed || fl.Changed(n)
			}
			if changed {
				cur := a.Credentials
				if !fl.Changed("host") {
					uf.host = cur.Host
				}
				if !fl.Changed("port") {
					uf.port = cur.Port
				}
				if !fl.Changed("database") {
					uf.database = cur.Database
				}
				if !fl.Changed("username") {
					uf.username = cur.Username
				}
				if !fl.Changed("ssl") {
					uf.ssl = cur.SSLEnabled
				}
				if !fl.Changed("ssl-reject-unauthorized") {
					uf.verify = cur.SSLRejectUnauthorized
				}
				creds, err := uf.credentials(o, false)
				if err != nil {
					return err
				}
				if creds.SSLCertificate == "" {
					creds.SSLCertificate = cur.SSLCertificate
				}
				body.Credentials = &creds
			}
			if body == (appconn.ConnectionUpdate{}) {
				return errors.New("nothing to change: give --name, --description, --gateway or connection flags")
			}
			var out appconn.ConnectionResponse
			if err := c.do(cmd.Context(), http.MethodPatch, appConnPath+"/"+url.PathEscape(a.ID), nil, body, &out); err != nil {
				return err
			}
			return o.printAppConn(out.AppConnection)
		},
	}
	uf.bind(update)
	update.Flags().StringVar(&newName, "name", "", "a new name")
	del := &cobra.Command{
		Use: "delete NAME|ID", Short: "Delete an app connection that no secret rotation uses (project admins)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := projectClient(cmd.Context(), &projectID)
			if err != nil {
				return err
			}
			a, err := appConnByRef(cmd, c, projectID, args[0])
			if err != nil {
				return err
			}
			if err := c.do(cmd.Context(), http.MethodDelete, appConnPath+"/"+url.PathEscape(a.ID), nil, nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(o.stderr, "Deleted app connection %s.\n", a.Name)
			return nil
		},
	}
	cmd.AddCommand(create, list, get, update, del)
	return cmd
}
