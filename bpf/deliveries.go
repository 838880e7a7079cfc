package bpf

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
)

// ErrDeliveryTaken: the connection is already being delivered (another
// delivery holds its four-tuple); pick another local port.
var ErrDeliveryTaken = errors.New("delivery four-tuple already recorded")

func deliveryKey(app, caller netip.AddrPort) steerDeliveryKey {
	return steerDeliveryKey{
		LocalAddr: app.Addr().As16(), RemoteAddr: caller.Addr().As16(),
		LocalPort: app.Port(), RemotePort: caller.Port(),
	}
}

// PutDelivery records that ztunnel is about to connect from caller to the
// app at app inside a pod netns, so that sk_lookup lets the SYN reach the
// app. The key must be new: a recorded one is ErrDeliveryTaken.
func PutDelivery(m *ebpf.Map, app, caller netip.AddrPort) error {
	key := deliveryKey(app, caller)
	one := uint8(1)
	if err := m.Update(&key, &one, ebpf.UpdateNoExist); err != nil {
		if errors.Is(err, ebpf.ErrKeyExist) {
			return fmt.Errorf("record delivery %s -> %s: %w", caller, app, ErrDeliveryTaken)
		}
		return fmt.Errorf("record delivery %s -> %s: %w", caller, app, err)
	}
	return nil
}

// DeleteDelivery removes a recorded delivery (its connect returned).
// Deleting an absent entry is not an error.
func DeleteDelivery(m *ebpf.Map, app, caller netip.AddrPort) error {
	key := deliveryKey(app, caller)
	if err := m.Delete(&key); err != nil && !isNotExist(err) {
		return fmt.Errorf("delete delivery %s -> %s: %w", caller, app, err)
	}
	return nil
}
