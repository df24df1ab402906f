package secrets_test

import (
	"strings"
	"testing"

	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/project"
	"github.com/airlockpam/airlock/internal/secrets"
)

func TestEnvironmentsDefaultAndEditable(t *testing.T) {
	onEachStore(t, func(t *testing.T, f *fixture) {
		alice := f.user(t, "alice@example.com")
		member := f.user(t, "member@example.com")
		pid := f.project(t, alice, "payments")
		if _, err := f.projects.SetMember(alice, pid, "member@example.com", "", project.RoleMember); err != nil {
			t.Fatal(err)
		}
		envs, err := f.svc.Environments(alice, pid)
		if err != nil {
			t.Fatal(err)
		}
		var slugs []string
		for _, e := range envs {
			slugs = append(slugs, e.Slug)
		}
		if strings.Join(slugs, ",") != "dev,staging,prod" {
			t.Fatalf("a new project's environments: %v, want dev,staging,prod", slugs)
		}
		_, err = f.svc.Set(alice, pid, at("qa"), "A", "v")
		if !errs.Is(err, errs.Invalid) || !strings.Contains(err.Error(), "dev, staging, prod") {
			t.Fatalf("writing into an unknown environment: %v, want invalid naming the ones there are", err)
		}
		if _, err := f.svc.CreateEnvironment(member, pid, "qa", ""); !errs.Is(err, errs.Forbidden) {
			t.Fatalf("a member added an environment: %v", err)
		}
		qa, err := f.svc.CreateEnvironment(alice, pid, "qa", "QA")
		if err != nil || qa.Position != 4 {
			t.Fatalf("CreateEnvironment = %+v, %v", qa, err)
		}
		if _, err := f.svc.CreateEnvironment(alice, pid, "qa", "again"); !errs.Is(err, errs.Invalid) {
			t.Fatalf("a second qa: %v, want invalid", err)
		}
		if _, err := f.svc.Set(alice, pid, at("qa"), "A", "v"); err != nil {
			t.Fatal(err)
		}
		if e, err := f.svc.RenameEnvironment(alice, pid, "qa", "Quality"); err != nil || e.Name != "Quality" {
			t.Fatalf("RenameEnvironment = %+v, %v", e, err)
		}
		if err := f.svc.DeleteEnvironment(alice, pid, "qa"); !errs.Is(err, errs.Conflict) {
			t.Fatalf("deleting an environment that holds a secret: %v, want conflict", err)
		}
		if err := f.svc.Delete(alice, pid, at("qa"), "A"); err != nil {
			t.Fatal(err)
		}
		if err := f.svc.DeleteEnvironment(alice, pid, "qa"); err != nil {
			t.Fatal(err)
		}
		for _, e := range []string{"dev", "staging"} {
			if err := f.svc.DeleteEnvironment(alice, pid, e); err != nil {
				t.Fatal(err)
			}
		}
		if err := f.svc.DeleteEnvironment(alice, pid, "prod"); !errs.Is(err, errs.Conflict) {
			t.Fatalf("deleting the last environment: %v, want conflict", err)
		}
		// Deleting environments does not bring the defaults back.
		if envs, _ := f.svc.Environments(alice, pid); len(envs) != 1 || envs[0].Slug != "prod" {
			t.Fatalf("environments after deletes: %+v", envs)
		}
	})
}

func TestFolders(t *testing.T) {
	onEachStore(t, func(t *testing.T, f *fixture) {
		alice := f.user(t, "alice@example.com")
		pid := f.project(t, alice, "payments")
		orders := secrets.Place{Environment: "prod", Path: "/db/orders/"}
		_, err := f.svc.Set(alice, pid, orders, "PASSWORD", "v")
		if !errs.Is(err, errs.NotFound) || !strings.Contains(err.Error(), "folders create") {
			t.Fatalf("writing into a missing folder: %v, want not found saying how to create it", err)
		}
		if _, err := f.svc.CreateFolder(alice, pid, orders); err != nil {
			t.Fatal(err)
		}
		if _, err := f.svc.CreateFolder(alice, pid, orders); !errs.Is(err, errs.Conflict) {
			t.Fatalf("creating a folder twice: %v", err)
		}
		list, err := f.svc.Folders(alice, pid, "prod")
		var paths []string
		for _, fo := range list {
			paths = append(paths, fo.Path)
		}
		if err != nil || strings.Join(paths, " ") != "/ /db /db/orders" {
			t.Fatalf("Folders = %v, %v; want / /db /db/orders (parents are created)", paths, err)
		}
		if folders, _ := f.svc.Folders(alice, pid, "dev"); len(folders) != 1 {
			t.Fatalf("folders leak between environments: %+v", folders)
		}
		s1, err := f.svc.Set(alice, pid, orders, "PASSWORD", "orders-pw")
		if err != nil || s1.Version != 1 || s1.Path != "/db/orders" {
			t.Fatalf("Set in a folder = %+v, %v", s1, err)
		}
		if s, err := f.svc.Set(alice, pid, at("prod"), "PASSWORD", "root-pw"); err != nil || s.Version != 1 {
			t.Fatalf("the same name in / = %+v, %v; want its own version 1", s, err)
		}
		if v := value(t)(f.svc.Get(alice, pid, orders, "PASSWORD", 0)); v != "orders-pw" {
			t.Fatalf("the folder's secret reads %q", v)
		}
		if l, _ := f.svc.List(alice, pid, secrets.Place{Environment: "prod", Path: "/db"}); len(l) != 0 {
			t.Fatalf("a parent folder lists its child's secrets: %+v", l)
		}
		if err := f.svc.DeleteFolder(alice, pid, secrets.Place{Environment: "prod", Path: "/db"}); !errs.Is(err, errs.Conflict) {
			t.Fatalf("deleting a folder with a subfolder: %v, want conflict", err)
		}
		if err := f.svc.DeleteFolder(alice, pid, orders); !errs.Is(err, errs.Conflict) {
			t.Fatalf("deleting a folder with a secret: %v, want conflict", err)
		}
		// A folder whose name extends another's is not its subfolder.
		if _, err := f.svc.CreateFolder(alice, pid, secrets.Place{Environment: "prod", Path: "/db_x"}); err != nil {
			t.Fatal(err)
		}
		if err := f.svc.Delete(alice, pid, orders, "PASSWORD"); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{"/db/orders", "/db", "/db_x"} {
			if err := f.svc.DeleteFolder(alice, pid, secrets.Place{Environment: "prod", Path: p}); err != nil {
				t.Fatalf("DeleteFolder(%s): %v", p, err)
			}
		}
		for _, bad := range []string{"db", "/db//x", "/a/../b", "/a b", "/" + strings.Repeat("x", 65)} {
			if _, err := f.svc.CreateFolder(alice, pid, secrets.Place{Environment: "prod", Path: bad}); !errs.Is(err, errs.Invalid) {
				t.Errorf("CreateFolder(%q): %v, want invalid", bad, err)
			}
		}
	})
}

func TestHistoryAndRestore(t *testing.T) {
	onEachStore(t, func(t *testing.T, f *fixture) {
		alice := f.user(t, "alice@example.com")
		pid := f.project(t, alice, "payments")
		for _, v := range []string{"one", "two"} {
			if _, err := f.svc.Set(alice, pid, at("dev"), "K", v); err != nil {
				t.Fatal(err)
			}
		}
		if err := f.svc.Delete(alice, pid, at("dev"), "K"); err != nil {
			t.Fatal(err)
		}
		h, err := f.svc.History(alice, pid, at("dev"), "K")
		if err != nil || len(h) != 3 || h[0].Version != 3 || !h[0].Deleted || h[2].Version != 1 || h[2].CreatedBy != "alice@example.com" {
			t.Fatalf("History = %+v, %v", h, err)
		}
		if v := value(t)(f.svc.Get(alice, pid, at("dev"), "K", 1)); v != "one" {
			t.Fatalf("version 1 reads %q", v)
		}
		if _, err := f.svc.Get(alice, pid, at("dev"), "K", 3); !errs.Is(err, errs.Invalid) {
			t.Fatalf("reading the deleting version: %v, want invalid", err)
		}
		if _, err := f.svc.Get(alice, pid, at("dev"), "K", 9); !errs.Is(err, errs.Invalid) {
			t.Fatalf("reading a version that does not exist: %v, want invalid", err)
		}
		s, err := f.svc.Restore(alice, pid, at("dev"), "K", 1)
		if err != nil || s.Version != 4 {
			t.Fatalf("Restore = %+v, %v; want version 4", s, err)
		}
		if v := value(t)(f.svc.Get(alice, pid, at("dev"), "K", 0)); v != "one" {
			t.Fatalf("after restoring version 1 the secret reads %q", v)
		}
		for _, v := range []int{3, 9, 0} {
			if _, err := f.svc.Restore(alice, pid, at("dev"), "K", v); !errs.Is(err, errs.Invalid) {
				t.Errorf("Restore(%d): %v, want invalid", v, err)
			}
		}
		if _, err := f.svc.History(alice, pid, at("dev"), "NONE"); !errs.Is(err, errs.NotFound) {
			t.Fatalf("the history of nothing: %v", err)
		}
	})
}

// TestReadsAudited: each value read, one secret or a folder's, is in the
// audit log by name and version, never with the value; listing is not a read.
func TestReadsAudited(t *testing.T) {
	onEachStore(t, func(t *testing.T, f *fixture) {
		alice := f.user(t, "alice@example.com")
		pid := f.project(t, alice, "payments")
		for _, k := range []string{"A", "B"} {
			if _, err := f.svc.Set(alice, pid, at("prod"), k, "value-"+k+"-s3cret"); err != nil {
				t.Fatal(err)
			}
		}
		reads := func() []string {
			t.Helper()
			rows, err := f.db.Query(`SELECT target_id, details FROM audit_logs WHERE action = 'secret.read' ORDER BY at, id`)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			var out []string
			for rows.Next() {
				var target, details string
				if err := rows.Scan(&target, &details); err != nil {
					t.Fatal(err)
				}
				if strings.Contains(details, "s3cret") {
					t.Fatalf("an audit entry holds a value: %s", details)
				}
				out = append(out, target)
			}
			return out
		}
		if _, err := f.svc.List(alice, pid, at("prod")); err != nil {
			t.Fatal(err)
		}
		if r := reads(); len(r) != 0 {
			t.Fatalf("a listing was audited as a read: %v", r)
		}
		if _, err := f.svc.Get(alice, pid, at("prod"), "A", 0); err != nil {
			t.Fatal(err)
		}
		all, err := f.svc.Reveal(alice, pid, at("prod"))
		if err != nil || len(all) != 2 || *all[0].Value != "value-A-s3cret" || *all[1].Value != "value-B-s3cret" {
			t.Fatalf("Reveal = %+v, %v", all, err)
		}
		if r := strings.Join(reads(), " "); r != "prod:/A prod:/A prod:/B" {
			t.Fatalf("audited reads: %s", r)
		}
	})
}
