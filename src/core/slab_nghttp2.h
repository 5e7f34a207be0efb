/* slab_nghttp2.h -- nghttp2's allocations from a worker's slab (src/core/slab.h)
 *
 * An HTTP/2 session makes and frees a dozen small objects per stream (streams, frames, header table entries,
 * queued items); given this allocator (nghttp2_session_server_new3 / client_new3), they come from the worker's
 * slab instead of the C allocator. Used by the server side (src/http/h2_conn.c) and the upstream client
 * (src/client/h2client.c) alike.
 */
#ifndef TT_CORE_SLAB_NGHTTP2_H
#define TT_CORE_SLAB_NGHTTP2_H

#include "core/slab.h"

#include <nghttp2/nghttp2.h>

/** An nghttp2_mem drawing on `s` (not owned; it must outlive every session given the result). nghttp2 copies it
 *  into the session. A session using it lives and dies on the slab's worker thread. */
nghttp2_mem tt_slab_nghttp2_mem(tt_slab_t *s);

#endif
