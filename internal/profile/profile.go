// Package profile writes a process's CPU profile over its whole run and
// its allocation profile at exit, for --cpu-profile and --alloc-profile
// flags (like go test's -cpuprofile and -memprofile): a benchmark starts
// the process with them and reads the files with `go tool pprof` after
// stopping it.
package profile

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
)

// Start starts the CPU profile into cpuFile (none when "") and returns
// the function that stops it and writes the allocation profile into
// allocFile (none when ""). Call it once, when the process is done.
func Start(cpuFile, allocFile string) (stop func() error, err error) {
	var cpu *os.File
	if cpuFile != "" {
		if cpu, err = os.Create(cpuFile); err != nil {
			return nil, fmt.Errorf("cpu profile: %w", err)
		}
		if err := pprof.StartCPUProfile(cpu); err != nil {
			cpu.Close()
			return nil, fmt.Errorf("cpu profile: %w", err)
		}
	}
	return func() error {
		var errs []error
		if cpu != nil {
			pprof.StopCPUProfile()
			errs = append(errs, cpu.Close())
		}
		if allocFile != "" {
			errs = append(errs, writeAllocs(allocFile))
		}
		return errors.Join(errs...)
	}, nil
}

func writeAllocs(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("alloc profile: %w", err)
	}
	runtime.GC() // up to date statistics
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		f.Close()
		return fmt.Errorf("alloc profile: %w", err)
	}
	return f.Close()
}
