package cli

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/airlockpam/airlock/internal/pam"
)

// resourceEndpoint is where the resource's database is.
func resourceEndpoint(r pam.Resource) string {
	if r.Kind == "mongodb" {
		return r.ConnectionString
	}
	return r.Host + ":" + strconv.Itoa(r.Port)
}

// resourceGateway is the name of the resource's gateway, else its id.
func resourceGateway(r pam.Resource) string {
	if r.GatewayName != "" {
		return r.GatewayName
	}
	return r.GatewayID
}

// resourceTLS says how the gateway speaks TLS to the database.
func resourceTLS(r pam.Resource) string {
	switch {
	case !r.SSLEnabled:
		return "off"
	case !r.SSLRejectUnauthorized:
		return "on, unverified"
	case r.SSLCAPEM != "":
		return "verified (custom CA)"
	default:
		return "verified"
	}
}

func resourcesPath(projectID string, rest ...string) string {
	p := "/api/v1/projects/" + url.PathEscape(projectID) + "/resources"
	for _, r := range rest {
		p += "/" + url.PathEscape(r)
	}
	return p
}

func (o *options) printResource(r pam.Resource) error {
	rotation := "none"
	if r.HasRotationCredentials {
		rotation = "stored, as " + r.RotationUsername
	}
	fields := [][2]string{{"ID", r.ID}, {"Name", r.Name}, {"Kind", r.Kind}, {"Gateway", resourceGateway(r)}}
	if r.Kind == "mongodb" {
		fields = append(fields, [2]string{"Connection string", r.ConnectionString}, [2]string{"Auth database", r.Database})
	} else {
		fields = append(fields, [2]string{"Host", r.Host}, [2]string{"Port", strconv.Itoa(r.Port)}, [2]string{"Database", r.Database})
	}
	if r.Kind != "mongodb" {
		auth := "SCRAM-SHA-256 only"
		if len(r.AllowAuth) > 0 {
			auth = "SCRAM-SHA-256, " + strings.Join(r.AllowAuth, ", ") + " (allowed by an organization admin)"
		}
		fields = append(fields, [2]string{"Authentication", auth})
	}
	fields = append(fields, [2]string{"TLS", resourceTLS(r)}, [2]string{"Rotation credentials", rotation},
		[2]string{"Created", fmtTime(r.CreatedAt)}, [2]string{"Updated", fmtTime(r.UpdatedAt)})
	return o.printObject(r, fields)
}

// readStdinSecret reads a password from standard input: the whole input
// without its final line break, or, at a terminal, a line typed without echo.
func (o *options) readStdinSecret(what string) (string, error) {
	if f, ok := o.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprintf(o.stderr, "%s: ", what)
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(o.stderr)
		if err != nil {
			return "", fmt.Errorf("reading the %s: %w", strings.ToLower(what), err)
		}
		return string(b), nil
	}
	b, err := io.ReadAll(io.LimitReader(o.stdin, 4097))
	if err != nil {
		return "", fmt.Errorf("reading the %s from stdin: %w", strings.ToLower(what), err)
	}
	if len(b) > 4096 {
		return "", fmt.Errorf("the %s on stdin is longer than 4096 bytes", strings.ToLower(what))
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", fmt.Errorf("no %s on stdin", strings.ToLower(what))
	}
	return s, nil
}

// resourceFlags are the settings of a resource given on the command line.
type resourceFlags struct {
	projectID, name, gateway                      string
	host, database, connectionString              string
	caFile, rotationUsername                      string
	port                                          int
	sslEnabled, sslRejectUnauthorized             bool
	rotationPasswordStdin, clearCA, clearRotation bool
	allowAuth                                     []string
}

func (f *resourceFlags) addTLS(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.BoolVar(&f.sslEnabled, "ssl-enabled", true, "require TLS to the database")
	fl.BoolVar(&f.sslRejectUnauthorized, "ssl-reject-unauthorized", true, "verify the database's certificate chain and host name")
	fl.StringVar(&f.caFile, "ssl-ca-file", "", "PEM file of the CA to trust for the database instead of the system roots")
}

func (f *resourceFlags) addRotation(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.rotationUsername, "rotation-username", "", "a database user allowed to change other users' passwords, for rotations")
	fl.BoolVar(&f.rotationPasswordStdin, "rotation-password-stdin", false, "read the rotation user's password from standard input")
}

// tlsAndRotation adds the TLS and rotation settings to a request body; with
// onlyChanged, only the flags given on the command line. A create takes
// them from the update's fields (see createInput).
func (f *resourceFlags) tlsAndRotation(o *options, cmd *cobra.Command, body *pam.ResourceUpdate, onlyChanged bool) error {
	fl := cmd.Flags()
	if !onlyChanged || fl.Changed("ssl-enabled") {
		body.SSLEnabled = &f.sslEnabled
	}
	if !onlyChanged || fl.Changed("ssl-reject-unauthorized") {
		body.SSLRejectUnauthorized = &f.sslRejectUnauthorized
	}
	if f.caFile != "" {
		pem, err := os.ReadFile(f.caFile)
		if err != nil {
			return fmt.Errorf("reading --ssl-ca-file: %w", err)
		}
		ca := string(pem)
		body.SSLCAPEM = &ca
	}
	if f.rotationPasswordStdin {
		if f.rotationUsername == "" && !onlyChanged {
			return errors.New("--rotation-password-stdin needs --rotation-username")
		}
		pw, err := o.readStdinSecret("Rotation password")
		if err != nil {
			return err
		}
		body.RotationPassword = &pw
	} else if f.rotationUsername != "" && !onlyChanged {
		return errors.New("the rotation user's password is read from standard input: add --rotation-password-stdin and pipe it in")
	}
	if f.rotationUsername != "" {
		body.RotationUsername = &f.rotationUsername
	}
	if fl.Lookup("allow-auth") != nil && fl.Changed("allow-auth") {
		methods := []string{}
		for _, m := range f.allowAuth {
			if m = strings.TrimSpace(m); m != "" && m != "scram" {
				methods = append(methods, m)
			}
		}
		body.AllowAuth = &methods
	}
	return nil
}

// createInput is in with the TLS and rotation settings of s.
func createInput(in pam.ResourceInput, s pam.ResourceUpdate) pam.ResourceInput {
	in.SSLEnabled, in.SSLRejectUnauthorized = s.SSLEnabled, s.SSLRejectUnauthorized
	for _, v := range []struct{ to, from *string }{{&in.SSLCAPEM, s.SSLCAPEM}, {&in.RotationUsername, s.RotationUsername},
		{&in.RotationPassword, s.RotationPassword}} {
		if v.from != nil {
			*v.to = *v.from
		}
	}
	if s.AllowAuth != nil {
		in.AllowAuth = *s.AllowAuth
	}
	return in
}

// addAllowAuth adds --allow-auth (PostgreSQL resources).
func (f *resourceFlags) addAllowAuth(cmd *cobra.Command) {
	cmd.Flags().StringSliceVar(&f.allowAuth, "allow-auth", nil, "organization admins: let the gateway also answer md5 and/or "+
		"password (cleartext) authentication, e.g. md5,password; scram alone goes back to SCRAM-SHA-256 only")
}

func newResourcesCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{Use: "resources", Short: "Manage a project's databases (resources)", Aliases: []string{"resource"}}

	create := &cobra.Command{Use: "create", Short: "Add a PostgreSQL or MongoDB resource (project admins)"}
	var pg resourceFlags
	createPG := &cobra.Command{
		Use: "postgres", Short: "Add a PostgreSQL resource", Args: cobra.NoArgs,
		Example: "  airlock resources create postgres --project-id P --name orders-db --gateway dc1 --host db.internal --database orders",
		RunE: func(cmd *cobra.Command, _ []string) error {
			var settings pam.ResourceUpdate
			if err := pg.tlsAndRotation(o, cmd, &settings, false); err != nil {
				return err
			}
			body := createInput(pam.ResourceInput{Kind: "postgres", Name: pg.name, Gateway: pg.gateway, Host: pg.host,
				Port: pg.port, Database: pg.database}, settings)
			return o.createResource(cmd, pg.projectID, body)
		},
	}
	createPG.Flags().StringVar(&pg.host, "host", "", "the database server's host name or IP address, as the gateway sees it")
	createPG.Flags().IntVar(&pg.port, "port", 5432, "the database server's port")
	createPG.Flags().StringVar(&pg.database, "database", "", "the database to connect to")
	pg.addAllowAuth(createPG)
	var mg resourceFlags
	createMongo := &cobra.Command{
		Use: "mongodb", Short: "Add a MongoDB resource", Args: cobra.NoArgs,
		Example: "  airlock resources create mongodb --project-id P --name sales --gateway dc1 \\\n" +
			"    --connection-string 'mongodb://db1:27017,db2:27017/?replicaSet=rs0'",
		RunE: func(cmd *cobra.Command, _ []string) error {
			var settings pam.ResourceUpdate
			if err := mg.tlsAndRotation(o, cmd, &settings, false); err != nil {
				return err
			}
			body := createInput(pam.ResourceInput{Kind: "mongodb", Name: mg.name, Gateway: mg.gateway,
				ConnectionString: mg.connectionString, Database: mg.database}, settings)
			return o.createResource(cmd, mg.projectID, body)
		},
	}
	createMongo.Flags().StringVar(&mg.connectionString, "connection-string", "",
		"a mongodb:// or mongodb+srv:// URI without user, password or database")
	createMongo.Flags().StringVar(&mg.database, "database", "admin", "the auth database")
	for _, c := range []struct {
		cmd *cobra.Command
		f   *resourceFlags
	}{{createPG, &pg}, {createMongo, &mg}} {
		fl := c.cmd.Flags()
		fl.StringVar(&c.f.projectID, "project-id", "", projectFlagHelp)
		fl.StringVar(&c.f.name, "name", "", "a name for the resource: lower-case letters, digits and hyphens")
		fl.StringVar(&c.f.gateway, "gateway", "", "the name or id of the gateway that reaches the database")
		c.f.addTLS(c.cmd)
		c.f.addRotation(c.cmd)
		for _, req := range []string{"project-id", "name", "gateway"} {
			_ = c.cmd.MarkFlagRequired(req)
		}
	}
	_ = createPG.MarkFlagRequired("host")
	_ = createPG.MarkFlagRequired("database")
	_ = createMongo.MarkFlagRequired("connection-string")
	create.AddCommand(createPG, createMongo)

	var projectID string
	list := &cobra.Command{
		Use: "list", Short: "List a project's resources", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := projectClient(cmd.Context(), &projectID)
			if err != nil {
				return err
			}
			var rs []pam.Resource
			if err := c.do(cmd.Context(), http.MethodGet, resourcesPath(projectID), nil, nil, &rs); err != nil {
				return err
			}
			rows := make([][]string, 0, len(rs))
			for _, r := range rs {
				rows = append(rows, []string{r.ID, r.Name, r.Kind, resourceGateway(r), resourceEndpoint(r), r.Database, resourceTLS(r), fmtTime(r.CreatedAt)})
			}
			return o.printTable(rs, []string{"ID", "NAME", "KIND", "GATEWAY", "ENDPOINT", "DATABASE", "TLS", "CREATED"}, rows)
		},
	}
	get := &cobra.Command{
		Use: "get NAME|ID", Short: "Show a resource", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := projectClient(cmd.Context(), &projectID)
			if err != nil {
				return err
			}
			var r pam.Resource
			if err := c.do(cmd.Context(), http.MethodGet, resourcesPath(projectID, args[0]), nil, nil, &r); err != nil {
				return err
			}
			return o.printResource(r)
		},
	}
	var up resourceFlags
	var accountPasswords []string
	update := &cobra.Command{
		Use: "update NAME|ID", Short: "Change a resource's settings (project admins)", Args: cobra.ExactArgs(1),
		Long: "Change a resource's settings. Only the flags given change; --clear-ssl-ca goes back to the system roots, " +
			"--clear-rotation-credentials removes the rotation user.",
		RunE: func(cmd *cobra.Command, args []string) error {
			fl := cmd.Flags()
			var body pam.ResourceUpdate
			for flag, field := range map[string]**string{"name": &body.Name, "gateway": &body.Gateway, "host": &body.Host, "database": &body.Database,
				"connection-string": &body.ConnectionString} {
				if fl.Changed(flag) {
					v, _ := fl.GetString(flag)
					*field = &v
				}
			}
			if fl.Changed("port") {
				body.Port = &up.port
			}
			if up.clearCA && up.caFile != "" {
				return errors.New("give --ssl-ca-file or --clear-ssl-ca, not both")
			}
			none := ""
			if up.clearCA {
				body.SSLCAPEM = &none
			}
			if up.clearRotation {
				if up.rotationUsername != "" || up.rotationPasswordStdin {
					return errors.New("--clear-rotation-credentials cannot go with --rotation-username or --rotation-password-stdin")
				}
				body.RotationUsername = &none
			}
			if err := up.tlsAndRotation(o, cmd, &body, true); err != nil {
				return err
			}
			if len(accountPasswords) > 0 {
				creds, err := readAccountPasswords(o, accountPasswords)
				if err != nil {
					return err
				}
				body.Accounts = creds
			}
			if reflect.ValueOf(body).IsZero() {
				return errors.New("nothing to change: give at least one setting, such as --name, --host or --ssl-reject-unauthorized")
			}
			c, err := projectClient(cmd.Context(), &projectID)
			if err != nil {
				return err
			}
			var r pam.Resource
			if err := c.do(cmd.Context(), http.MethodPatch, resourcesPath(projectID, args[0]), nil, body, &r); err != nil {
				return err
			}
			return o.printResource(r)
		},
	}
	ufl := update.Flags()
	ufl.StringVar(&up.name, "name", "", "a new name for the resource: lower-case letters, digits and hyphens")
	ufl.StringVar(&up.gateway, "gateway", "", "the name or id of the gateway that reaches the database")
	ufl.StringVar(&up.host, "host", "", "PostgreSQL: the database server's host name or IP address")
	ufl.IntVar(&up.port, "port", 5432, "PostgreSQL: the database server's port")
	ufl.StringVar(&up.database, "database", "", "PostgreSQL: the database; MongoDB: the auth database")
	ufl.StringVar(&up.connectionString, "connection-string", "", "MongoDB: the mongodb:// or mongodb+srv:// URI")
	ufl.BoolVar(&up.clearCA, "clear-ssl-ca", false, "trust the system roots again instead of a custom CA")
	ufl.BoolVar(&up.clearRotation, "clear-rotation-credentials", false, "remove the rotation user and password")
	ufl.StringArrayVar(&accountPasswords, "account-password-file", nil,
		"ACCOUNT=FILE: re-enter an account's password (read from FILE; - for standard input, once) for a new host, port, database, "+
			"connection string, gateway or TLS setting; repeat it for every account of the resource")
	up.addTLS(update)
	up.addRotation(update)
	up.addAllowAuth(update)
	del := &cobra.Command{
		Use: "delete NAME|ID", Short: "Delete a resource and its accounts (project admins)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := projectClient(cmd.Context(), &projectID)
			if err != nil {
				return err
			}
			if err := c.do(cmd.Context(), http.MethodDelete, resourcesPath(projectID, args[0]), nil, nil, nil); err != nil {
				return err
			}
			_, err = fmt.Fprintf(o.stdout, "Deleted resource %s and its accounts.\n", args[0])
			return err
		},
	}
	for _, c := range []*cobra.Command{list, get, update, del} {
		c.Flags().StringVar(&projectID, "project-id", "", projectFlagHelp)
		_ = c.MarkFlagRequired("project-id")
	}
	cmd.AddCommand(create, list, get, update, del)
	return cmd
}

func (o *options) createResource(cmd *cobra.Command, projectID string, body pam.ResourceInput) error {
	c, err := projectClient(cmd.Context(), &projectID)
	if err != nil {
		return err
	}
	var r pam.Resource
	if err := c.do(cmd.Context(), http.MethodPost, resourcesPath(projectID), nil, body, &r); err != nil {
		return err
	}
	return o.printResource(r)
}

// readAccountPasswords reads the re-entered account passwords of
// --account-password-file ACCOUNT=FILE flags.
func readAccountPasswords(o *options, specs []string) ([]pam.AccountCredentials, error) {
	var out []pam.AccountCredentials
	stdinUsed := false
	for _, spec := range specs {
		name, file, ok := strings.Cut(spec, "=")
		if !ok || name == "" || file == "" {
			return nil, errors.New("--account-password-file takes ACCOUNT=FILE, such as app=./app.password or app=- for standard input")
		}
		var pw string
		if file == "-" {
			if stdinUsed {
				return nil, errors.New("only one --account-password-file may read standard input (-)")
			}
			stdinUsed = true
			var err error
			if pw, err = o.readStdinSecret("Password of account " + name); err != nil {
				return nil, err
			}
		} else {
			b, err := os.ReadFile(file)
			if err != nil {
				return nil, fmt.Errorf("reading the password of account %s: %w", name, err)
			}
			if pw = strings.TrimRight(string(b), "\r\n"); pw == "" {
				return nil, fmt.Errorf("the password file of account %s is empty", name)
			}
		}
		out = append(out, pam.AccountCredentials{Account: name, Password: pw})
	}
	return out, nil
}
