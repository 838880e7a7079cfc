package dnsproxy

import (
	"strings"

	"github.com/miekg/dns"
)

// serviceName says which Service a question name names, asked from a pod
// in namespace podNS, in a cluster whose domain is domain (lower case, no
// dots at either end). The forms, as a pod's search path reaches them:
//
//	svc                      svc in podNS
//	svc.ns                   svc in ns
//	svc.ns.svc               svc in ns
//	svc.ns.svc.<domain>      svc in ns
//
// Names are compared case-insensitively; a trailing dot does not matter.
// ok is false for every other name.
func serviceName(qname, podNS, domain string) (ns, name string, ok bool) {
	q := strings.ToLower(dns.Fqdn(qname))
	if rest, found := strings.CutSuffix(q, ".svc."+domain+"."); found {
		l := dns.SplitDomainName(rest)
		if len(l) == 2 {
			return l[1], l[0], true
		}
		return "", "", false
	}
	l := dns.SplitDomainName(q)
	switch {
	case len(l) == 1 && podNS != "":
		return podNS, l[0], true
	case len(l) == 2:
		return l[1], l[0], true
	case len(l) == 3 && l[2] == "svc":
		return l[1], l[0], true
	}
	return "", "", false
}

// NormalizeDomain is domain as serviceName wants it: lower case, without
// leading or trailing dots.
func NormalizeDomain(domain string) string {
	return strings.Trim(strings.ToLower(domain), ".")
}
