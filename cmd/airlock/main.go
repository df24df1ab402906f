// Command airlock is the Airlock binary: server, gateway, dev and the user
// commands. It only wires the command tree; the parts live under internal/.
package main

import (
	"os"

	"github.com/airlockpam/airlock/internal/cli"
)

func main() { os.Exit(cli.Execute()) }
