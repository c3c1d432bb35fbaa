package bench

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// Linux /proc readers for the server's memory and CPU.

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

// parseStatCPU extracts utime+stime from /proc/<pid>/stat. The command name
// (field 2) may contain spaces and parentheses, so fields are counted from the
// last ')'.
func parseStatCPU(stat []byte) (float64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("bench: malformed /proc stat")
	}
	f := bytes.Fields(stat[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("bench: short /proc stat")
	}
	ut, err1 := strconv.ParseUint(string(f[11]), 10, 64)
	st, err2 := strconv.ParseUint(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bench: bad cpu fields in /proc stat")
	}
	return float64(ut+st) / clockTicks, nil
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
