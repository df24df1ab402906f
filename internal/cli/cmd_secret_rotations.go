package cli

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/airlockpam/airlock/internal/secretrotation"
)

const rotationsPath = "/api/v2/secret-rotations/postgres-credentials"

func (o *options) printRotation(r *secretrotation.Rotation) error {
	if r == nil {
		return errors.New("the server's answer holds no secret rotation")
	}
	auto := "off"
	if r.IsAutoRotationEnabled {
		auto = "on"
	}
	return o.printObject(secretrotation.RotationResponse{SecretRotation: r}, [][2]string{{"ID", r.ID}, {"Name", r.Name}, {"Type", r.Type},
		{"Connection", r.ConnectionName}, {"Secrets", fmt.Sprintf("%s:%s %s, %s", r.Environment, r.SecretPath, r.SecretsMapping.Username, r.SecretsMapping.Password)},
		{"Users", r.Parameters.Username1 + ", " + r.Parameters.Username2}, {"Active user", orDash(r.ActiveUsername)},
		{"Schedule", fmt.Sprintf("every %d days at %s %s, auto-rotation %s", r.RotationInterval, r.RotateAt, r.TimeZone, auto)},
		{"Status", orDash(r.RotationStatus)}, {"Last rotated", optTime(r.LastRotatedAt)}, {"Next rotation", optTime(r.NextRotationAt)},
		{"Last error", orDash(r.LastRotationMessage)}, {"Description", orDash(r.Description)}})
}

func newSecretRotationsCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{Use: "secret-rotations", Aliases: []string{"secret-rotation"},
		Short: "Rotate database credentials that applications read from secrets (dual-user PostgreSQL)"}
	var projectID string
	cmd.PersistentFlags().StringVar(&projectID, "project-id", "", "the project's id or name")
	refQuery := func() url.Values { return url.Values{"projectId": {projectID}} }

	var name, connection, env, path, rotateAt, tz, u1, u2, userSecret, pwSecret, description string
	var interval int
	var auto bool
	create := &cobra.Command{
		Use: "create postgres-credentials", Short: "Add a dual-user PostgreSQL credentials rotation; it publishes username 1 at once (project admins)",
		Args: cobra.ExactArgs(1),
		Example: "  airlock secret-rotations create postgres-credentials --project-id P --name orders-creds --connection orders-db \\\n" +
			"    --env prod --path /db/orders --interval 30 --rotate-at 02:00 --timezone Europe/Berlin \\\n" +
			"    --username1 orders_a --username2 orders_b --username-secret PGUSER --password-secret PGPASSWORD",
		RunE: func(cmd *cobra.Command, args []string) error {
			if args[0] != "postgres-credentials" {
				return fmt.Errorf("the rotation type is postgres-credentials, not %q", args[0])
			}
			c, err := projectClient(cmd.Context(), &projectID)
			if err != nil {
				return err
			}
			body := secretrotation.RotationInput{Name: name, ProjectID: projectID, ConnectionID: connection, Environment: env, SecretPath: path,
				RotationInterval: interval, RotateAt: rotateAt, TimeZone: tz, IsAutoRotationEnabled: &auto, Description: description,
				Parameters:     secretrotation.Parameters{Username1: u1, Username2: u2},
				SecretsMapping: secretrotation.SecretsMapping{Username: userSecret, Password: pwSecret}}
			var out secretrotation.RotationResponse
			if err := c.do(cmd.Context(), http.MethodPost, rotationsPath, nil, body, &out); err != nil {
				return err
			}
			return o.printRotation(out.SecretRotation)
		},
	}
	fl := create.Flags()
	fl.StringVar(&name, "name", "", "a slug such as orders-creds")
	fl.StringVar(&connection, "connection", "", "the app connection (name or id) that changes the passwords")
	fl.StringVar(&env, "env", "", "the environment of the mapped secrets")
	fl.StringVar(&path, "path", "/", "the folder of the mapped secrets")
	fl.IntVar(&interval, "interval", 0, "days between rotations (1-365)")
	fl.StringVar(&rotateAt, "rotate-at", "", "the time of day to rotate at, HH:MM in --timezone")
	fl.StringVar(&tz, "timezone", "UTC", "the time zone of --rotate-at, such as Europe/Berlin")
	fl.BoolVar(&auto, "auto-rotation", true, "rotate on the schedule (false: only with `secret-rotations rotate`)")
	fl.StringVar(&u1, "username1", "", "the first database user")
	fl.StringVar(&u2, "username2", "", "the second database user")
	fl.StringVar(&userSecret, "username-secret", "", "the secret the active username is written to")
	fl.StringVar(&pwSecret, "password-secret", "", "the secret the active password is written to")
	fl.StringVar(&description, "description", "", "what the rotation is for")
	for _, f := range []string{"name", "connection", "env", "interval", "rotate-at", "username1", "username2", "username-secret", "password-secret"} {
		_ = create.MarkFlagRequired(f)
	}

	list := &cobra.Command{
		Use: "list", Short: "List the project's secret rotations", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := projectClient(cmd.Context(), &projectID)
			if err != nil {
				return err
			}
			var out secretrotation.RotationList
			if err := c.do(cmd.Context(), http.MethodGet, rotationsPath, refQuery(), nil, &out); err != nil {
				return err
			}
			rows := make([][]string, 0, len(out.SecretRotations))
			for _, r := range out.SecretRotations {
				rows = append(rows, []string{r.Name, r.ConnectionName, r.Environment + ":" + r.SecretPath, orDash(r.ActiveUsername),
					"every " + strconv.Itoa(r.RotationInterval) + "d at " + r.RotateAt + " " + r.TimeZone, orDash(r.RotationStatus),
					optTime(r.LastRotatedAt), optTime(r.NextRotationAt)})
			}
			return o.printTable(out, []string{"NAME", "CONNECTION", "SECRETS", "ACTIVE USER", "SCHEDULE", "STATUS", "LAST", "NEXT"}, rows)
		},
	}
	one := func(use, short, method, suffix string) *cobra.Command {
		return &cobra.Command{
			Use: use + " NAME|ID", Short: short, Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := projectClient(cmd.Context(), &projectID)
				if err != nil {
					return err
				}
				var out secretrotation.RotationResponse
				if err := c.do(cmd.Context(), method, rotationsPath+"/"+url.PathEscape(args[0])+suffix, refQuery(), nil, &out); err != nil {
					return err
				}
				return o.printRotation(out.SecretRotation)
			},
		}
	}
	get := one("get", "Show a rotation: status, active user, last and next rotation, last error", http.MethodGet, "")
	rotate := one("rotate", "Rotate now (project admins)", http.MethodPost, "/rotate-secrets")

	var newName string
	update := &cobra.Command{
		Use: "update NAME|ID", Short: "Change a rotation's schedule, name or description (project admins)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f := cmd.Flags()
			var body secretrotation.RotationUpdate
			if f.Changed("name") {
				body.Name = &newName
			}
			if f.Changed("description") {
				body.Description = &description
			}
			if f.Changed("interval") {
				body.RotationInterval = &interval
			}
			if f.Changed("rotate-at") {
				body.RotateAt = &rotateAt
			}
			if f.Changed("timezone") {
				body.TimeZone = &tz
			}
			if f.Changed("auto-rotation") {
				body.IsAutoRotationEnabled = &auto
			}
			if body == (secretrotation.RotationUpdate{}) {
				return fmt.Errorf("nothing to change: give --interval, --rotate-at, --timezone, --auto-rotation, --name or --description")
			}
			c, err := projectClient(cmd.Context(), &projectID)
			if err != nil {
				return err
			}
			var out secretrotation.RotationResponse
			if err := c.do(cmd.Context(), http.MethodPatch, rotationsPath+"/"+url.PathEscape(args[0]), refQuery(), body, &out); err != nil {
				return err
			}
			return o.printRotation(out.SecretRotation)
		},
	}
	uf := update.Flags()
	uf.StringVar(&newName, "name", "", "a new name")
	uf.StringVar(&description, "description", "", "a new description")
	uf.IntVar(&interval, "interval", 0, "days between rotations (1-365)")
	uf.StringVar(&rotateAt, "rotate-at", "", "HH:MM in the time zone")
	uf.StringVar(&tz, "timezone", "", "the time zone of --rotate-at")
	uf.BoolVar(&auto, "auto-rotation", true, "rotate on the schedule")

	var deleteSecrets, revoke bool
	del := &cobra.Command{
		Use: "delete NAME|ID", Short: "Delete a rotation; the mapped secrets and passwords stay unless --delete-secrets, --revoke-credentials (project admins)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := projectClient(cmd.Context(), &projectID)
			if err != nil {
				return err
			}
			q := refQuery()
			if deleteSecrets {
				q.Set("deleteSecrets", "true")
			}
			if revoke {
				q.Set("revokeGeneratedCredentials", "true")
			}
			if err := c.do(cmd.Context(), http.MethodDelete, rotationsPath+"/"+url.PathEscape(args[0]), q, nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(o.stderr, "Deleted secret rotation %s.\n", args[0])
			return nil
		},
	}
	del.Flags().BoolVar(&deleteSecrets, "delete-secrets", false, "also delete the mapped secrets")
	del.Flags().BoolVar(&revoke, "revoke-credentials", false, "first give both database users a random password nobody keeps")

	creds := &cobra.Command{
		Use: "credentials NAME|ID", Short: "Print both users' generated credentials; the read is audited (project admins)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := projectClient(cmd.Context(), &projectID)
			if err != nil {
				return err
			}
			var out secretrotation.GeneratedCredentials
			if err := c.do(cmd.Context(), http.MethodGet, rotationsPath+"/"+url.PathEscape(args[0])+"/generated-credentials", refQuery(), nil, &out); err != nil {
				return err
			}
			rows := [][]string{}
			for _, g := range out.Accounts {
				rows = append(rows, []string{g.Username, orDash(g.Password), fmt.Sprint(g.Username == out.Active)})
			}
			return o.printTable(out, []string{"USERNAME", "PASSWORD", "ACTIVE"}, rows)
		},
	}
	cmd.AddCommand(create, list, get, update, del, rotate, creds)
	return cmd
}
