package ztunnel

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// PodStatus is one pod as shown on the admin /pods endpoint.
type PodStatus struct {
	UID         string          `json:"uid"`
	Name        string          `json:"name"`
	Namespace   string          `json:"namespace"`
	IPs         []netip.Addr    `json:"ips"`
	NetnsCookie uint64          `json:"netnsCookie"`
	Identity    string          `json:"identity,omitempty"`
	State       string          `json:"state"`
	Error       string          `json:"error,omitempty"`
	Listeners   []ListenerState `json:"listeners,omitempty"`
	ActiveConns int64           `json:"activeConns"`
}

// ListenerState is one listening socket of a pod.
type ListenerState struct {
	Kind       string           `json:"kind"`
	Addr       string           `json:"addr"`
	Registered []netip.AddrPort `json:"registered,omitempty"` // SOCKHASH keys: pod ip and port
}

// Pods returns the status of every handed-over pod, sorted by namespace/name.
func (n *Node) Pods() []PodStatus {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]PodStatus, 0, len(n.pods))
	for _, p := range n.pods {
		out = append(out, p.status())
	}
	slices.SortFunc(out, func(a, b PodStatus) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	return out
}

func (p *pod) status() PodStatus {
	st, err := p.getState()
	s := PodStatus{
		UID: p.info.UID, Name: p.info.Name, Namespace: p.info.Namespace,
		IPs: p.info.IPs, NetnsCookie: p.info.NetnsCookie, State: st,
		ActiveConns: p.active.Load(),
	}
	if err != nil {
		s.Error = err.Error()
	}
	if st != stateReady {
		return s
	}
	s.IPs, s.Identity = p.flow.IPs, p.flow.ID.String()
	for _, l := range p.listeners {
		s.Listeners = append(s.Listeners, ListenerState{Kind: string(l.Kind), Addr: l.Ln.Addr().String(), Registered: l.registered})
	}
	return s
}

// Ready reports nil once agentd's snapshot arrived and every handed-over pod
// is set up, else why not.
func (n *Node) Ready() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.handedOver.Load() {
		return errHandedOver
	}
	if n.draining.Load() {
		return fmt.Errorf("shutting down")
	}
	if !n.snapshotDone {
		return fmt.Errorf("waiting for the agentd snapshot")
	}
	return n.podsNotReadyLocked()
}

// podsNotReady says which pods are not set up (nil: all are).
func (n *Node) podsNotReady() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.podsNotReadyLocked()
}

func (n *Node) podsNotReadyLocked() error {
	var notReady []string
	for _, p := range n.pods {
		if st, _ := p.getState(); st != stateReady {
			notReady = append(notReady, p.name()+" ("+st+")")
		}
	}
	if len(notReady) > 0 {
		slices.Sort(notReady)
		return fmt.Errorf("pods not set up: %s", strings.Join(notReady, ", "))
	}
	return nil
}

// podStates counts pods by state.
func (n *Node) podStates() map[string]int {
	n.mu.Lock()
	defer n.mu.Unlock()
	m := map[string]int{}
	for _, p := range n.pods {
		st, _ := p.getState()
		m[st]++
	}
	return m
}
