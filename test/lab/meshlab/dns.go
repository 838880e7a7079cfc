package meshlab

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// DNSResult is what `app dns-query` prints.
type DNSResult struct {
	Server  string   `json:"server"`
	Name    string   `json:"name"`
	Rcode   string   `json:"rcode,omitempty"`
	Answers []string `json:"answers,omitempty"` // A and AAAA addresses
	TXT     []string `json:"txt,omitempty"`     // TXT strings anywhere in the reply
	From    string   `json:"from,omitempty"`    // the reply's source as the app saw it
	Error   string   `json:"error,omitempty"`
}

// appDNSQuery is `app dns-query --server ADDR --name NAME [--type A|AAAA]
// [--sendto]`: one question to the server, as a resolver asks it (a
// connected UDP socket, or with --sendto an unconnected one); it prints a
// DNSResult. A failure is printed and returned.
func appDNSQuery(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("app dns-query", flag.ContinueOnError)
	server := fs.String("server", "", "DNS server (ip:port)")
	name := fs.String("name", "", "question name")
	qtype := fs.String("type", "A", "question type (A, AAAA, ...)")
	sendto := fs.Bool("sendto", false, "ask with sendto on an unconnected socket (else connect and send)")
	timeout := fs.Duration("timeout", 3*time.Second, "give up after")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	to, err := netip.ParseAddrPort(*server)
	if err != nil || *name == "" || dns.StringToType[strings.ToUpper(*qtype)] == 0 {
		return fmt.Errorf("%w: --server ip:port, --name and a known --type are required", ErrUsage)
	}
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(*name), dns.StringToType[strings.ToUpper(*qtype)])
	res := DNSResult{Server: to.String(), Name: q.Question[0].Name}
	r, from, err := dnsAsk(ctx, q, to, *sendto, *timeout)
	if err != nil {
		res.Error = err.Error()
	} else {
		res.Rcode, res.From = dns.RcodeToString[r.Rcode], from.String()
		for _, rr := range append(append(r.Answer, r.Ns...), r.Extra...) {
			switch v := rr.(type) {
			case *dns.A:
				res.Answers = append(res.Answers, v.A.String())
			case *dns.AAAA:
				res.Answers = append(res.Answers, v.AAAA.String())
			case *dns.TXT:
				res.TXT = append(res.TXT, v.Txt...)
			}
		}
	}
	if err := writeJSON(stdout, res); err != nil {
		return err
	}
	if res.Error != "" {
		return errors.New(res.Error)
	}
	return nil
}

// dnsAsk sends q to server and reads the reply to it.
func dnsAsk(ctx context.Context, q *dns.Msg, server netip.AddrPort, sendto bool, timeout time.Duration) (*dns.Msg, netip.AddrPort, error) {
	var c *net.UDPConn
	var err error
	if sendto {
		c, err = net.ListenUDP("udp", nil)
	} else {
		c, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(server))
	}
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	c.SetDeadline(time.Now().Add(timeout)) //nolint:errcheck // a fresh socket
	b, err := q.Pack()
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	if sendto {
		_, err = c.WriteToUDPAddrPort(b, server)
	} else {
		_, err = c.Write(b)
	}
	if err != nil {
		return nil, netip.AddrPort{}, fmt.Errorf("send: %w", err)
	}
	buf := make([]byte, 64<<10)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return nil, netip.AddrPort{}, fmt.Errorf("read reply: %w", err)
		}
		r := new(dns.Msg)
		if r.Unpack(buf[:n]) == nil && r.Id == q.Id {
			return r, netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), nil
		}
	}
}

// appDNSUpstream is `app dns-upstream --listen ADDR`: a resolver that
// answers every A question with 192.0.2.53 and every AAAA with
// 2001:db8::53, and adds a TXT record "from=<the query's source>", so a
// test sees who asked. It serves until stopped.
func appDNSUpstream(ctx context.Context, args []string, _ io.Writer) error {
	fs := flag.NewFlagSet("app dns-upstream", flag.ContinueOnError)
	listen := fs.String("listen", ":53", "UDP address to serve")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	pc, err := net.ListenPacket("udp", *listen)
	if err != nil {
		return err
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(upstreamAnswer)}
	stop := context.AfterFunc(ctx, func() { srv.Shutdown() }) //nolint:errcheck // ends ActivateAndServe
	defer stop()
	if err := srv.ActivateAndServe(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("dns upstream: %w", err)
	}
	return nil
}

func upstreamAnswer(w dns.ResponseWriter, q *dns.Msg) {
	r := new(dns.Msg)
	r.SetReply(q)
	if len(q.Question) == 1 {
		qq := q.Question[0]
		hdr := dns.RR_Header{Name: qq.Name, Rrtype: qq.Qtype, Class: dns.ClassINET, Ttl: 30}
		switch qq.Qtype {
		case dns.TypeA:
			r.Answer = append(r.Answer, &dns.A{Hdr: hdr, A: net.ParseIP("192.0.2.53")})
		case dns.TypeAAAA:
			r.Answer = append(r.Answer, &dns.AAAA{Hdr: hdr, AAAA: net.ParseIP("2001:db8::53")})
		}
		from := w.RemoteAddr().(*net.UDPAddr).AddrPort()
		r.Extra = append(r.Extra, &dns.TXT{Hdr: dns.RR_Header{Name: qq.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET},
			Txt: []string{"from=" + from.Addr().Unmap().String()}})
	}
	w.WriteMsg(r) //nolint:errcheck // the client retries
}

// DNSFloodResult is what `app dns-flood` prints.
type DNSFloodResult struct {
	Server  string  `json:"server"`
	Sent    int     `json:"sent"`
	Seconds float64 `json:"seconds"`
}

// appDNSFlood is `app dns-flood --server ADDR --duration D`: datagrams to
// the server as fast as one socket sends them, without waiting for
// replies, in turn: random bytes, a cut header, a question cut short,
// and a query for a new random name (the proxy forwards those).
func appDNSFlood(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("app dns-flood", flag.ContinueOnError)
	server := fs.String("server", "", "DNS server (ip:port)")
	duration := fs.Duration("duration", 5*time.Second, "how long")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	to, err := netip.ParseAddrPort(*server)
	if err != nil {
		return fmt.Errorf("%w: --server ip:port is required", ErrUsage)
	}
	c, err := net.ListenUDP("udp", nil)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, *duration)
	defer cancel()
	res := DNSFloodResult{Server: to.String()}
	start := time.Now()
	for i := 0; ctx.Err() == nil; i++ {
		if _, err := c.WriteToUDPAddrPort(floodPacket(i), to); err == nil {
			res.Sent++
		}
	}
	res.Seconds = time.Since(start).Seconds()
	return writeJSON(stdout, res)
}

// floodPacket is the i-th datagram of a DNS flood.
func floodPacket(i int) []byte {
	switch i % 4 {
	case 0:
		n, _ := rand.Int(rand.Reader, big.NewInt(600))
		b := make([]byte, n.Int64())
		rand.Read(b)
		return b
	case 1:
		return []byte{byte(i), byte(i >> 8), 1, 0, 0}
	case 2:
		return []byte{byte(i), byte(i >> 8), 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 40, 'a', 'b'}
	}
	q := new(dns.Msg)
	q.SetQuestion(fmt.Sprintf("flood-%d.example.", i), dns.TypeA)
	b, _ := q.Pack()
	return b
}
