package main

import (
	"net"
	"runtime/debug"
	"strconv"
)

// fly.io: a machine learns its identity and network from the environment
// (FLY_APP_NAME, FLY_MACHINE_ID, FLY_REGION, FLY_PRIVATE_IP; see README,
// "Deploy to fly.io in several regions"). When FLY_APP_NAME is set, the defaults of
// the flags below come from it, so that fly.toml needs no per-machine
// values; a flag or MESHCAST_* variable still wins.
//
//	--name              $FLY_MACHINE_ID
//	--region            $FLY_REGION
//	--gossip-addr       [::]:7946              (6PN, TCP+UDP)
//	--gossip-advertise  [$FLY_PRIVATE_IP]:7946
//	--mesh-addr         [::]:7947              (6PN, UDP)
//	--mesh-advertise    [$FLY_PRIVATE_IP]:7947
//	--join              $FLY_APP_NAME.internal:7946 (every started machine of the app)
//
// and the Go memory limit is 90 % of $FLY_VM_MEMORY_MB unless GOMEMLIMIT
// is set.
const (
	flyGossipPort = 7946
	flyMeshPort   = 7947
)

// flyDefaults returns the flag defaults a fly.io machine derives from env
// (empty without FLY_APP_NAME).
func flyDefaults(env func(string) string) map[string]string {
	app := env("FLY_APP_NAME")
	if app == "" {
		return nil
	}
	d := map[string]string{
		"gossip-addr": net.JoinHostPort("::", strconv.Itoa(flyGossipPort)),
		"mesh-addr":   net.JoinHostPort("::", strconv.Itoa(flyMeshPort)),
		"join":        net.JoinHostPort(app+".internal", strconv.Itoa(flyGossipPort)),
	}
	if ip := env("FLY_PRIVATE_IP"); ip != "" {
		d["gossip-advertise"] = net.JoinHostPort(ip, strconv.Itoa(flyGossipPort))
		d["mesh-advertise"] = net.JoinHostPort(ip, strconv.Itoa(flyMeshPort))
	}
	if id := env("FLY_MACHINE_ID"); id != "" {
		d["name"] = id
	}
	if r := env("FLY_REGION"); r != "" {
		d["region"] = r
	}
	return d
}

// flyMemoryLimit sets the Go memory limit from the machine's memory.
func flyMemoryLimit(env func(string) string) int64 {
	if env("GOMEMLIMIT") != "" {
		return 0
	}
	mb, err := strconv.ParseInt(env("FLY_VM_MEMORY_MB"), 10, 64)
	if err != nil || mb <= 0 {
		return 0
	}
	limit := mb << 20 * 9 / 10
	debug.SetMemoryLimit(limit)
	return limit
}
