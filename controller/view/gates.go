package view

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

// watchGates adds the Node and ServiceAccount informers. Their changes do
// not alter the snapshot, so they do not trigger a recompute; Run tells
// its Sink of deleted Nodes.
func (w *Watcher) watchGates(f informers.SharedInformerFactory) {
	w.nodeInf = f.Core().V1().Nodes().Informer()
	w.nodes = f.Core().V1().Nodes().Lister()
	saInf := f.Core().V1().ServiceAccounts().Informer()
	w.sas = f.Core().V1().ServiceAccounts().Lister()
	w.synced = append(w.synced, w.nodeInf.HasSynced, saInf.HasSynced)
}

// nodeDeleted tells sink, also of a delete seen only as a final state
// unknown (the watch missed it and a relist found the node gone).
func (w *Watcher) nodeDeleted(obj any, sink Sink) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	n, ok := obj.(*corev1.Node)
	if !ok {
		return
	}
	w.o.Logger.Info("node deleted", "node", n.Name)
	sink.NodeDeleted(n.Name)
}

// NodeExists reports whether the cache holds a Node named name.
func (w *Watcher) NodeExists(name string) bool {
	_, err := w.nodes.Get(name)
	return err == nil
}

// ServiceAccountExists reports whether the cache holds the ServiceAccount
// namespace/name.
func (w *Watcher) ServiceAccountExists(namespace, name string) bool {
	_, err := w.sas.ServiceAccounts(namespace).Get(name)
	return err == nil
}
