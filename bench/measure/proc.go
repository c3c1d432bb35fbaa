package measure

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"
)

// Linux /proc readers: memory and CPU of meshbench, the server and the host.

// clockTicks is USER_HZ, 100 on every mainstream Linux build.
const clockTicks = 100

// ReadRSSKiB returns VmRSS of process pid (0 = this process) in KiB.
func ReadRSSKiB(pid int) (int64, error) {
	b, err := os.ReadFile(procPath(pid, "status"))
	if err != nil {
		return 0, err
	}
	return parseStatusKiB(b, "VmRSS:")
}

func parseStatusKiB(status []byte, key string) (int64, error) {
	for line := range bytes.Lines(status) {
		rest, ok := bytes.CutPrefix(line, []byte(key))
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		if len(f) == 0 {
			break
		}
		return strconv.ParseInt(string(f[0]), 10, 64)
	}
	return 0, fmt.Errorf("bench: %s not found in /proc status", key)
}

// ReadCPUSeconds returns user+system CPU time consumed so far by process pid
// (0 = this process).
func ReadCPUSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(procPath(pid, "stat"))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(b)
}

// parseStatCPU extracts utime+stime from /proc/<pid>/stat.
func parseStatCPU(stat []byte) (float64, error) {
	f := statFields(stat)
	if len(f) < 13 { // utime and stime are fields 14 and 15
		return 0, fmt.Errorf("bench: short /proc stat")
	}
	ut, err1 := strconv.ParseUint(string(f[11]), 10, 64)
	st, err2 := strconv.ParseUint(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bench: bad cpu fields in /proc stat")
	}
	return float64(ut+st) / clockTicks, nil
}

// statFields are the fields of /proc/<pid>/stat from field 3 (state) on.
// The command name (field 2) may contain spaces and parentheses, so they
// are counted from the last ')'.
func statFields(stat []byte) [][]byte {
	return bytes.Fields(stat[bytes.LastIndexByte(stat, ')')+1:])
}

func procPath(pid int, file string) string {
	if pid == 0 {
		return "/proc/self/" + file
	}
	return "/proc/" + strconv.Itoa(pid) + "/" + file
}

// ReadHostBusySeconds returns the CPU time all cores of the machine spent
// outside idle and iowait since boot, from /proc/stat.
func ReadHostBusySeconds() (float64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	return parseHostBusy(b)
}

func parseHostBusy(stat []byte) (float64, error) {
	line, _, _ := bytes.Cut(stat, []byte("\n"))
	f := bytes.Fields(line)
	if len(f) < 8 || string(f[0]) != "cpu" {
		return 0, fmt.Errorf("bench: malformed /proc/stat")
	}
	var busy uint64
	// user nice system idle iowait irq softirq steal ...: skip idle (4) and iowait (5).
	for i, v := range f[1:min(len(f), 9)] {
		if i == 3 || i == 4 {
			continue
		}
		n, err := strconv.ParseUint(string(v), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("bench: malformed /proc/stat")
		}
		busy += n
	}
	return float64(busy) / clockTicks, nil
}

// ReadTreeCPUSeconds returns the CPU seconds of process pid and its live
// children (Postgres's backends and walsenders are children of the
// postmaster). Children that exited are not counted.
func ReadTreeCPUSeconds(pid int) (float64, error) {
	total, err := ReadCPUSeconds(pid)
	if err != nil {
		return 0, err
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		child, err := strconv.Atoi(e.Name())
		if err != nil || child == pid {
			continue
		}
		b, err := os.ReadFile(procPath(child, "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		if f := statFields(b); len(f) < 2 || string(f[1]) != strconv.Itoa(pid) { // field 4: ppid
			continue
		}
		if v, err := parseStatCPU(b); err == nil {
			total += v
		}
	}
	return total, nil
}

// ReadLoad1 reads the 1-minute load average.
func ReadLoad1() (float64, error) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0, err
	}
	var l float64
	_, err = fmt.Sscanf(string(b), "%f", &l)
	return l, err
}

// CPU is the CPU time consumed up to At, in seconds: by meshbench itself,
// by the whole host (busy: not idle or iowait) and by one other process;
// -1 where unknown.
type CPU struct {
	At               time.Time
	Self, Host, Proc float64
}

// ReadCPU reads meshbench's and the host's CPU time, and process pid's (0:
// none), with its live children when tree is set.
func ReadCPU(pid int, tree bool) CPU {
	c := CPU{At: time.Now(), Self: -1, Host: -1, Proc: -1}
	if v, err := ReadCPUSeconds(0); err == nil {
		c.Self = v
	}
	if v, err := ReadHostBusySeconds(); err == nil {
		c.Host = v
	}
	read := ReadCPUSeconds
	if tree {
		read = ReadTreeCPUSeconds
	}
	if pid > 0 {
		if v, err := read(pid); err == nil {
			c.Proc = v
		}
	}
	return c
}

// Cores returns the cores (CPU seconds per wall second) each used from a
// to c, -1 where unknown.
func (c CPU) Cores(a CPU) (self, host, proc float64) {
	wall := c.At.Sub(a.At).Seconds()
	rate := func(x, y float64) float64 {
		if x < 0 || y < 0 || wall <= 0 {
			return -1
		}
		return (y - x) / wall
	}
	return rate(a.Self, c.Self), rate(a.Host, c.Host), rate(a.Proc, c.Proc)
}
