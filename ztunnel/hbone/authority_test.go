package hbone

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseAuthority(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want "" means an error
	}{
		{"198.18.0.5:8080", "198.18.0.5:8080"},
		{"[fd00:18::5]:80", "[fd00:18::5]:80"},
		{"[FD00:18::5]:1", "[fd00:18::5]:1"},
		{"[::ffff:198.18.0.5]:65535", "198.18.0.5:65535"},
		{"198.18.0.5", ""},
		{"198.18.0.5:", ""},
		{"198.18.0.5:0", ""},
		{"198.18.0.5:65536", ""},
		{"198.18.0.5:080", ""},
		{"198.18.0.5:+80", ""},
		{"198.18.0.5:8a", ""},
		{"[198.18.0.5]:80", ""},
		{"fd00:18::5:80", ""},
		{"[fe80::1%eth0]:80", ""},
		{"example.com:80", ""},
		{"0.0.0.0:80", ""},
		{"[::]:80", ""},
		{"224.0.0.1:80", ""},
		{"[fd00:18::5:80", ""},
		{":80", ""},
		{"", ""},
	} {
		got, err := ParseAuthority(tc.in)
		if tc.want == "" {
			if err == nil {
				t.Errorf("ParseAuthority(%q) = %s, want error", tc.in, got)
			} else if !strings.Contains(err.Error(), "authority") {
				t.Errorf("ParseAuthority(%q) error %q does not name the authority", tc.in, err)
			}
			continue
		}
		if err != nil || got.String() != tc.want {
			t.Errorf("ParseAuthority(%q) = %s, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}

func FuzzParseAuthority(f *testing.F) {
	for _, s := range []string{"198.18.0.5:8080", "[fd00:18::5]:80", "[::ffff:1.2.3.4]:1", "a:1", "[::]:0", "1.2.3.4:00080"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ap, err := ParseAuthority(s)
		if err != nil {
			return
		}
		if ap.Port() == 0 || ap.Addr().Zone() != "" || ap.Addr().Is4In6() || ap.Addr().IsUnspecified() {
			t.Fatalf("ParseAuthority(%q) = %s: not a valid destination", s, ap)
		}
		again, err := ParseAuthority(ap.String())
		if err != nil || again != ap {
			t.Fatalf("round trip of %q: %s -> %s, %v", s, ap, again, err)
		}
		if want, err := netip.ParseAddrPort(s); err == nil && want.Addr().Unmap() != ap.Addr() {
			t.Fatalf("ParseAuthority(%q) = %s, netip says %s", s, ap, want)
		}
	})
}
