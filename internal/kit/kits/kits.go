// Package kits gathers the kits built into lifeboat into the registry the
// agent and the commands work with.
package kits

import (
	"github.com/lifeboat-ha/lifeboat/internal/kit"
	"github.com/lifeboat-ha/lifeboat/internal/kit/app"
	"github.com/lifeboat-ha/lifeboat/internal/kit/ec2"
	"github.com/lifeboat-ha/lifeboat/internal/kit/ip"
)

// Builtin returns a registry of the built-in kits: app, ec2 and ip.
func Builtin() *kit.Registry {
	r, err := kit.NewRegistry(app.Kit{}, &ec2.Kit{}, ip.Kit{})
	if err != nil {
		panic(err) // the built-in types are distinct
	}
	return r
}
