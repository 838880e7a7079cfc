// Package bpf holds AgentMesh's eBPF programs (C sources compiled with
// bpf2go into the committed *_bpfel.go / *_bpfel.o files), the layout of
// their pins in bpffs, and helpers for the maps ztunnel uses.
package bpf

//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -cflags "-O2 -g -Wall -Werror -ffile-prefix-map=${PWD}=." -target bpfel -type orig_addr -type tuple_key -type counters capture capture.c -- -I.
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -cflags "-O2 -g -Wall -Werror -ffile-prefix-map=${PWD}=." -target bpfel -type listener_key -type delivery_key -type counters steer steer.c -- -I.
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -cflags "-O2 -g -Wall -Werror -ffile-prefix-map=${PWD}=." -target bpfel -type dns_key -type counters dns dns.c -- -I.
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -cflags "-O2 -g -Wall -Werror -ffile-prefix-map=${PWD}=." -target bpfel -type sock_key -type accel_counters sockmap sockmap.c -- -I.
