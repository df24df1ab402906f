package mongodb

import (
	"context"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/airlockpam/airlock/internal/testenv"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// Rotate changes a user's password as the rotation account with
// updateUser against a real FerretDB: the new password logs in, the old
// one does not; an unknown user is refused and changes nothing.
func TestRotate(t *testing.T) {
	f := testenv.StartFerretDB(t)
	ctx := context.Background()
	client, err := mongo.Connect(f.ClientOptions(f.Admin))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Disconnect(ctx)
	const oldPw = "old-rotated-Pa55"
	if err := client.Database("admin").RunCommand(ctx, bson.D{{Key: "createUser", Value: "rotated"}, {Key: "pwd", Value: oldPw},
		{Key: "roles", Value: bson.A{}}, {Key: "mechanisms", Value: bson.A{"SCRAM-SHA-256"}}}).Err(); err != nil {
		t.Fatal(err)
	}
	admin := configFor(f, f.Admin)
	user := testenv.MongoUser{User: "rotated", Password: oldPw, Mechanism: "SCRAM-SHA-256"}

	res := rotate(ctx, admin, tunnel.Rotation{Username: "rotated", NewPassword: "new-rotated-Pa55-42"}, nil)
	if !res.OK {
		t.Fatalf("rotate: %+v", res)
	}
	if r := validate(ctx, configFor(f, user), nil); r.OK {
		t.Fatal("the old password still logs in")
	}
	user.Password = "new-rotated-Pa55-42"
	if r := validate(ctx, configFor(f, user), nil); !r.OK {
		t.Fatalf("the new password does not log in: %+v", r)
	}

	res = rotate(ctx, admin, tunnel.Rotation{Username: "nobody-here", NewPassword: "x-Pa55-word-123"}, nil)
	if res.OK || res.Code != tunnel.CodeDenied {
		t.Fatalf("rotating an unknown user: %+v", res)
	}
	if r := validate(ctx, configFor(f, user), nil); !r.OK {
		t.Fatalf("a refused rotation changed a password: %+v", r)
	}
}
