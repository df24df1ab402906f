//go:build !linux

package main

import (
	"context"
	"errors"
)

func eventLoopRelay(context.Context, string, func(int)) error {
	return errors.New("the event-loop relay runs on Linux only (epoll)")
}
