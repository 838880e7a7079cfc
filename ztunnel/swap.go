package ztunnel

import (
	"net/http"
	"sync/atomic"
)

// swapHandler is an http.Handler whose target can be replaced while serving.
type swapHandler struct {
	h http.Handler
	p atomic.Pointer[http.Handler]
}

func (s *swapHandler) set(h http.Handler) { s.p.Store(&h) }

func (s *swapHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h := s.p.Load(); h != nil {
		(*h).ServeHTTP(w, r)
		return
	}
	s.h.ServeHTTP(w, r)
}
