/* msg.c -- reason phrases and the text-response helper shared by every handler */
#include "http/msg.h"

const char *tt_http_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 102: return "Processing";
    case 103: return "Early Hints";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 421: return "Misdirected Request";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    }
    return "Unknown";
}

void tt_req_respond_text(tt_req_t *req, int status, tt_str_t fields)
{
    char body[64], hdr[512];
    int n = snprintf(body, sizeof(body), "%d %s\n", status, tt_http_reason(status));
    int h = snprintf(hdr, sizeof(hdr), "Content-Type: text/plain\r\n%.*s", (int)TT_MIN(fields.n, 400),
                     fields.p ? fields.p : "");
    tt_resp_t r;
    tt_resp_init(&r, status);
    r.fields = tt_str(hdr, (size_t)h);
    if (!tt_http_status_has_no_content(status)) {
        r.body = body;
        r.body_len = (size_t)n;
        r.content_length = n;
    }
    tt_req_respond(req, &r);
}
