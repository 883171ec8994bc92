/*
 * iocpsvc._speedups: the compiled accelerator of the hot path.
 *
 * The framing loops of the built-in framers (a whole read split into frames
 * in one call, each frame copied once, the maximum checked at the header),
 * and their encoders' batches (the objects a read's dispatch writes, framed
 * together into one bytes at the flush).
 *
 * The common case only.  Whenever a loop meets what it would not accept (a
 * frame over the maximum, a bad header, a wrong checksum ...), it stops and
 * hands the rest of the read to the pure-Python decoder (the method
 * `_slowDecode` of the Python subclass), which raises the same error with
 * the same words, or handles what is merely unusual (discarding a long
 * line).  Likewise an object the batch cannot frame itself (not exactly
 * bytes, or refused) is encoded at once by the pure-Python encoder
 * (`_slowEncode`), so an EncodeError is raised by writeObject, as ever.
 *
 * The Python classes in iocpsvc/codecs/ subclass these types; their
 * docstrings hold the wire formats.  Pure Python stays the reference:
 * tests/test_accel.py checks that both give the same frames, consumed
 * counts and errors for any bytes cut in any chunks.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>
#include <stdint.h>

static PyObject *str_slowDecode;
static PyObject *str_slowEncode;

/* ------------------------------------------------------------------------ */
/* Shared helpers                                                          */

/* Append a new bytes copy of buf[start:stop] to the list `out`. */
static inline int
appendFrame(PyObject *out, const char *buf, Py_ssize_t start, Py_ssize_t stop)
{
    PyObject *frame = PyBytes_FromStringAndSize(buf + start, stop - start);
    if (frame == NULL)
        return -1;
    int rc = PyList_Append(out, frame);
    Py_DECREF(frame);
    return rc;
}

/*
 * The rest of the read, data[position:], handed to the pure-Python decoder:
 * returns position + what it consumed, or -1 with its exception set.
 */
static Py_ssize_t
slowDecode(PyObject *self, const char *buf, Py_ssize_t position, Py_ssize_t end, PyObject *out)
{
    PyObject *rest = PyBytes_FromStringAndSize(buf + position, end - position);
    if (rest == NULL)
        return -1;
    PyObject *result = PyObject_CallMethodObjArgs(self, str_slowDecode, rest, out, NULL);
    Py_DECREF(rest);
    if (result == NULL)
        return -1;
    Py_ssize_t consumed = PyLong_AsSsize_t(result);
    Py_DECREF(result);
    if (consumed == -1 && PyErr_Occurred())
        return -1;
    return position + consumed;
}

/* The ends of every decode: the count, after releasing the buffer. */
static PyObject *
decodeDone(Py_buffer *view, Py_ssize_t position)
{
    PyBuffer_Release(view);
    return PyLong_FromSsize_t(position);
}

/* ... or after handing the rest of the read to the pure-Python decoder. */
static PyObject *
decodeRestSlowly(PyObject *self, Py_buffer *view, Py_ssize_t position, PyObject *out)
{
    position = slowDecode(self, (const char *)view->buf, position, view->len, out);
    PyBuffer_Release(view);
    return position < 0 ? NULL : PyLong_FromSsize_t(position);
}

/* ... or on an error already set. */
static PyObject *
decodeFailed(Py_buffer *view)
{
    PyBuffer_Release(view);
    return NULL;
}

/* Read data and out, the arguments of every decode(data, out). */
static int
decodeArguments(PyObject *const *args, Py_ssize_t nargs, Py_buffer *view, PyObject **out)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "decode(data, out) takes 2 arguments");
        return -1;
    }
    if (!PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "decode's out must be a list");
        return -1;
    }
    *out = args[1];
    return PyObject_GetBuffer(args[0], view, PyBUF_SIMPLE);
}

static inline uint64_t
readUnsigned(const unsigned char *p, int size, int bigEndian)
{
    uint64_t value = 0;
    int i;
    if (bigEndian) {
        for (i = 0; i < size; i++)
            value = (value << 8) | p[i];
    } else {
        for (i = size - 1; i >= 0; i--)
            value = (value << 8) | p[i];
    }
    return value;
}

static inline void
writeUnsigned(unsigned char *p, uint64_t value, int size, int bigEndian)
{
    int i;
    if (bigEndian) {
        for (i = size - 1; i >= 0; i--) {
            p[i] = (unsigned char)(value & 0xFF);
            value >>= 8;
        }
    } else {
        for (i = 0; i < size; i++) {
            p[i] = (unsigned char)(value & 0xFF);
            value >>= 8;
        }
    }
}

/* DIOCP's checksum: the sum of the bytes, modulo 2**32. */
static inline uint32_t
byteSum(const unsigned char *p, Py_ssize_t n)
{
    uint32_t total = 0;
    Py_ssize_t i;
    for (i = 0; i < n; i++)
        total += p[i];
    return total;
}

/* ------------------------------------------------------------------------ */
/* HeaderDecoder: length (Netty's LengthFieldBasedFrameDecoder), hpsocket,  */
/* diocp: a fixed header that gives the frame's length.                     */

enum { KIND_LENGTH = 0, KIND_HPSOCKET = 1, KIND_DIOCP = 2 };

typedef struct {
    PyObject_HEAD
    int kind;
    int fieldOffset;
    int fieldSize;
    int bigEndian;
    int isSigned;
    int verify;
    Py_ssize_t headerLength;
    Py_ssize_t strip;
    Py_ssize_t maxFrameLength;
    long long extra; /* length: adjust + headerLength */
    uint32_t headerFlag;
} HeaderDecoder;

static int
HeaderDecoder_init(HeaderDecoder *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"kind", "maxFrameLength", "headerLength", "fieldOffset", "fieldSize",
                             "bigEndian", "signed", "adjust", "strip", "headerFlag", "verify", NULL};
    long long adjust = 0;
    unsigned long headerFlag = 0;
    self->fieldOffset = 0;
    self->fieldSize = 4;
    self->bigEndian = 1;
    self->isSigned = 0;
    self->strip = 0;
    self->verify = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "inn|iippLnkp", kwlist, &self->kind, &self->maxFrameLength,
                                     &self->headerLength, &self->fieldOffset, &self->fieldSize, &self->bigEndian,
                                     &self->isSigned, &adjust, &self->strip, &headerFlag, &self->verify))
        return -1;
    if (self->kind < KIND_LENGTH || self->kind > KIND_DIOCP || self->maxFrameLength <= 0 ||
        self->headerLength <= 0 || self->fieldSize < 1 || self->fieldSize > 8 || self->strip < 0) {
        PyErr_SetString(PyExc_ValueError, "bad HeaderDecoder parameters");
        return -1;
    }
    self->extra = adjust + (long long)self->headerLength;
    self->headerFlag = (uint32_t)headerFlag;
    return 0;
}

static PyObject *
HeaderDecoder_decode(HeaderDecoder *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    PyObject *out;
    if (decodeArguments(args, nargs, &view, &out) < 0)
        return NULL;
    const unsigned char *buf = (const unsigned char *)view.buf;
    const Py_ssize_t end = view.len;
    const Py_ssize_t headerLength = self->headerLength;
    const Py_ssize_t maxFrameLength = self->maxFrameLength;
    Py_ssize_t position = 0;
    /* One loop per kind: the header is read straight from the buffer at
       `position`, each frame is one PyBytes copy, and anything unusual
       leaves the loop for the pure-Python decoder. */
    if (self->kind == KIND_LENGTH) {
        const int fieldOffset = self->fieldOffset, fieldSize = self->fieldSize;
        const int bigEndian = self->bigEndian, isSigned = self->isSigned;
        const long long extra = self->extra;
        const Py_ssize_t strip = self->strip;
        const uint64_t signBit = (uint64_t)1 << (8 * fieldSize - 1);
        while (end - position >= headerLength) {
            uint64_t value = readUnsigned(buf + position + fieldOffset, fieldSize, bigEndian);
            if (isSigned && (value & signBit))
                goto slow; /* negative */
            if (value > (uint64_t)maxFrameLength + 0x7FFFFFFFULL)
                goto slow; /* too long, whatever the adjustment */
            long long frameLength = (long long)value + extra;
            if (frameLength > (long long)maxFrameLength || frameLength < (long long)headerLength ||
                frameLength < (long long)strip)
                goto slow;
            if (position + (Py_ssize_t)frameLength > end)
                break;
            if (appendFrame(out, (const char *)buf, position + strip, position + (Py_ssize_t)frameLength) < 0)
                goto error;
            position += (Py_ssize_t)frameLength;
        }
    } else if (self->kind == KIND_HPSOCKET) {
        const uint32_t headerFlag = self->headerFlag;
        while (end - position >= 4) {
            uint32_t header = (uint32_t)readUnsigned(buf + position, 4, 0);
            Py_ssize_t length = (Py_ssize_t)(header & 0x3FFFFF);
            if ((headerFlag && (header >> 22) != headerFlag) || length > maxFrameLength || length == 0)
                goto slow;
            if (position + 4 + length > end)
                break;
            if (appendFrame(out, (const char *)buf, position + 4, position + 4 + length) < 0)
                goto error;
            position += 4 + length;
        }
    } else { /* KIND_DIOCP */
        const int verify = self->verify;
        while (end - position >= 10) {
            if (buf[position] != 0x10 || buf[position + 1] != 0x0D)
                goto slow;
            uint32_t checksum = (uint32_t)readUnsigned(buf + position + 2, 4, 0);
            uint64_t length = readUnsigned(buf + position + 6, 4, 1);
            if (length > (uint64_t)maxFrameLength)
                goto slow;
            Py_ssize_t stop = position + 10 + (Py_ssize_t)length;
            if (stop > end)
                break;
            if (length) {
                if (verify && byteSum(buf + position + 10, (Py_ssize_t)length) != checksum)
                    goto slow;
                if (appendFrame(out, (const char *)buf, position + 10, stop) < 0)
                    goto error;
            }
            position = stop;
        }
    }
    return decodeDone(&view, position);
slow:
    return decodeRestSlowly((PyObject *)self, &view, position, out);
error:
    return decodeFailed(&view);
}

static PyMethodDef HeaderDecoder_methods[] = {
    {"decode", (PyCFunction)(void (*)(void))HeaderDecoder_decode, METH_FASTCALL,
     "decode(data, out) -> bytes consumed; frames are appended to out"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef HeaderDecoder_members[] = {
    {"maxFrameLength", T_PYSSIZET, offsetof(HeaderDecoder, maxFrameLength), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject HeaderDecoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "iocpsvc._speedups.HeaderDecoder",
    .tp_basicsize = sizeof(HeaderDecoder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "The framing loop of the header framers (length, hpsocket, diocp).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)HeaderDecoder_init,
    .tp_methods = HeaderDecoder_methods,
    .tp_members = HeaderDecoder_members,
};

/* ------------------------------------------------------------------------ */
/* DelimitedDecoder: line and delimiter.  Its state members have the names  */
/* of the pure-Python decoder's slots, whose decode runs on this object as  */
/* `_slowDecode` for discarding and every error.                            */

typedef struct {
    PyObject_HEAD
    PyObject *delimiter; /* bytes */
    Py_ssize_t maxFrameLength;
    Py_ssize_t discardedFrames;
    Py_ssize_t scanned;
    char discard;
    char stripCR;
    char discarding;
} DelimitedDecoder;

static int
DelimitedDecoder_init(DelimitedDecoder *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"delimiter", "maxFrameLength", "discard", "stripCR", NULL};
    PyObject *delimiter;
    int discard = 0, stripCR = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!n|pp", kwlist, &PyBytes_Type, &delimiter,
                                     &self->maxFrameLength, &discard, &stripCR))
        return -1;
    if (PyBytes_GET_SIZE(delimiter) == 0 || self->maxFrameLength <= 0) {
        PyErr_SetString(PyExc_ValueError, "bad DelimitedDecoder parameters");
        return -1;
    }
    Py_INCREF(delimiter);
    Py_XSETREF(self->delimiter, delimiter);
    self->discard = (char)discard;
    self->stripCR = (char)stripCR;
    self->discardedFrames = 0;
    self->scanned = 0;
    self->discarding = 0;
    return 0;
}

static void
DelimitedDecoder_dealloc(DelimitedDecoder *self)
{
    Py_XDECREF(self->delimiter);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The first delimiter in buf[from:end], or -1. */
static inline Py_ssize_t
findDelimiter(const char *buf, Py_ssize_t from, Py_ssize_t end, const char *delim, Py_ssize_t dl)
{
    if (dl == 1) {
        const char *hit = memchr(buf + from, delim[0], (size_t)(end - from));
        return hit ? hit - buf : -1;
    }
    while (end - from >= dl) {
        const char *hit = memchr(buf + from, delim[0], (size_t)(end - from - dl + 1));
        if (hit == NULL)
            return -1;
        if (memcmp(hit + 1, delim + 1, (size_t)(dl - 1)) == 0)
            return hit - buf;
        from = (hit - buf) + 1;
    }
    return -1;
}

static PyObject *
DelimitedDecoder_decode(DelimitedDecoder *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    PyObject *out;
    if (decodeArguments(args, nargs, &view, &out) < 0)
        return NULL;
    const char *buf = (const char *)view.buf;
    const Py_ssize_t end = view.len;
    Py_ssize_t position = 0;
    if (self->discarding)
        goto slow; /* skipping a long frame: the pure decoder does it */
    const char *delim = PyBytes_AS_STRING(self->delimiter);
    const Py_ssize_t dl = PyBytes_GET_SIZE(self->delimiter);
    const Py_ssize_t maxFrameLength = self->maxFrameLength;
    const int stripCR = self->stripCR;
    /* Resume the search where the previous call stopped (a delimiter may
       straddle two reads): each byte is searched once. */
    Py_ssize_t from = self->scanned - dl + 1;
    if (from < 0)
        from = 0;
    for (;;) {
        Py_ssize_t found = findDelimiter(buf, from, end, delim, dl);
        if (found < 0)
            break;
        Py_ssize_t stop = found;
        if (stripCR && stop > position && buf[stop - 1] == '\r')
            stop--;
        if (stop - position > maxFrameLength) {
            self->scanned = 0;
            goto slow;
        }
        if (appendFrame(out, buf, position, stop) < 0)
            goto error;
        position = found + dl;
        from = position;
    }
    self->scanned = end - position;
    if (end - position > maxFrameLength)
        goto slow; /* too long unless it may still end: the pure decoder says */
    return decodeDone(&view, position);
slow:
    return decodeRestSlowly((PyObject *)self, &view, position, out);
error:
    return decodeFailed(&view);
}

static PyMethodDef DelimitedDecoder_methods[] = {
    {"decode", (PyCFunction)(void (*)(void))DelimitedDecoder_decode, METH_FASTCALL,
     "decode(data, out) -> bytes consumed; frames are appended to out"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef DelimitedDecoder_members[] = {
    {"delimiter", T_OBJECT, offsetof(DelimitedDecoder, delimiter), READONLY, NULL},
    {"maxFrameLength", T_PYSSIZET, offsetof(DelimitedDecoder, maxFrameLength), READONLY, NULL},
    {"discard", T_BOOL, offsetof(DelimitedDecoder, discard), READONLY, NULL},
    {"discardedFrames", T_PYSSIZET, offsetof(DelimitedDecoder, discardedFrames), 0, NULL},
    {"_stripCR", T_BOOL, offsetof(DelimitedDecoder, stripCR), READONLY, NULL},
    {"_scanned", T_PYSSIZET, offsetof(DelimitedDecoder, scanned), 0, NULL},
    {"_discarding", T_BOOL, offsetof(DelimitedDecoder, discarding), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject DelimitedDecoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "iocpsvc._speedups.DelimitedDecoder",
    .tp_basicsize = sizeof(DelimitedDecoder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "The framing loop of line and delimiter.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)DelimitedDecoder_init,
    .tp_dealloc = (destructor)DelimitedDecoder_dealloc,
    .tp_methods = DelimitedDecoder_methods,
    .tp_members = DelimitedDecoder_members,
};

/* ------------------------------------------------------------------------ */
/* NetstringDecoder: <length>:<payload>,  State members as the pure decoder. */

typedef struct {
    PyObject_HEAD
    Py_ssize_t maxFrameLength;
    Py_ssize_t headerLimit;
    Py_ssize_t payloadLength;
} NetstringDecoder;

static int
NetstringDecoder_init(NetstringDecoder *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"maxFrameLength", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "n", kwlist, &self->maxFrameLength))
        return -1;
    if (self->maxFrameLength <= 0) {
        PyErr_SetString(PyExc_ValueError, "bad NetstringDecoder parameters");
        return -1;
    }
    /* The longest valid header: the digits of the maximum, and the colon. */
    Py_ssize_t digits = 1, value = self->maxFrameLength;
    while (value >= 10) {
        value /= 10;
        digits++;
    }
    self->headerLimit = digits + 1;
    self->payloadLength = -1;
    return 0;
}

static PyObject *
NetstringDecoder_decode(NetstringDecoder *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    PyObject *out;
    if (decodeArguments(args, nargs, &view, &out) < 0)
        return NULL;
    const char *buf = (const char *)view.buf;
    const Py_ssize_t end = view.len;
    const Py_ssize_t maxFrameLength = self->maxFrameLength;
    const Py_ssize_t headerLimit = self->headerLimit;
    Py_ssize_t position = 0;
    Py_ssize_t length = self->payloadLength;
    for (;;) {
        if (length < 0) {
            Py_ssize_t limit = end - position < headerLimit ? end - position : headerLimit;
            const char *colon = limit > 0 ? memchr(buf + position, ':', (size_t)limit) : NULL;
            if (colon == NULL) {
                /* A partial header: kept if it may still become a valid
                   one, else the pure decoder says what is wrong. */
                long long value = 0;
                Py_ssize_t i;
                if (limit == 0)
                    break;
                if (limit == headerLimit || (buf[position] == '0' && limit > 1))
                    goto slow;
                for (i = position; i < end; i++) {
                    if (buf[i] < '0' || buf[i] > '9')
                        goto slow;
                    value = value * 10 + (buf[i] - '0');
                }
                if (value > (long long)maxFrameLength)
                    goto slow;
                break;
            }
            Py_ssize_t digits = (colon - buf) - position;
            if (digits == 0 || (buf[position] == '0' && digits > 1))
                goto slow;
            long long value = 0;
            Py_ssize_t i;
            for (i = position; i < position + digits; i++) {
                if (buf[i] < '0' || buf[i] > '9')
                    goto slow;
                value = value * 10 + (buf[i] - '0');
            }
            if (value > (long long)maxFrameLength)
                goto slow;
            length = (Py_ssize_t)value;
            position += digits + 1;
        }
        Py_ssize_t stop = position + length;
        if (stop >= end)
            break; /* the payload, or its comma, is still to come */
        if (buf[stop] != ',') {
            self->payloadLength = length;
            goto slowAfterHeader;
        }
        if (appendFrame(out, buf, position, stop) < 0)
            goto error;
        position = stop + 1;
        length = -1;
    }
    self->payloadLength = length;
    return decodeDone(&view, position);
slow:
    self->payloadLength = -1;
slowAfterHeader:
    return decodeRestSlowly((PyObject *)self, &view, position, out);
error:
    return decodeFailed(&view);
}

static PyMethodDef NetstringDecoder_methods[] = {
    {"decode", (PyCFunction)(void (*)(void))NetstringDecoder_decode, METH_FASTCALL,
     "decode(data, out) -> bytes consumed; payloads are appended to out"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef NetstringDecoder_members[] = {
    {"maxFrameLength", T_PYSSIZET, offsetof(NetstringDecoder, maxFrameLength), READONLY, NULL},
    {"_headerLimit", T_PYSSIZET, offsetof(NetstringDecoder, headerLimit), READONLY, NULL},
    {"_payloadLength", T_PYSSIZET, offsetof(NetstringDecoder, payloadLength), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject NetstringDecoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "iocpsvc._speedups.NetstringDecoder",
    .tp_basicsize = sizeof(NetstringDecoder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "The framing loop of netstring.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)NetstringDecoder_init,
    .tp_methods = NetstringDecoder_methods,
    .tp_members = NetstringDecoder_members,
};

/* ------------------------------------------------------------------------ */
/* FixedDecoder: frames of one size; nothing can be wrong.                  */

typedef struct {
    PyObject_HEAD
    Py_ssize_t frameLength;
} FixedDecoder;

static int
FixedDecoder_init(FixedDecoder *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"frameLength", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "n", kwlist, &self->frameLength))
        return -1;
    if (self->frameLength <= 0) {
        PyErr_SetString(PyExc_ValueError, "bad FixedDecoder parameters");
        return -1;
    }
    return 0;
}

static PyObject *
FixedDecoder_decode(FixedDecoder *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    PyObject *out;
    if (decodeArguments(args, nargs, &view, &out) < 0)
        return NULL;
    const char *buf = (const char *)view.buf;
    const Py_ssize_t size = self->frameLength;
    const Py_ssize_t stop = view.len - view.len % size;
    Py_ssize_t position;
    for (position = 0; position < stop; position += size) {
        if (appendFrame(out, buf, position, position + size) < 0)
            return decodeFailed(&view);
    }
    return decodeDone(&view, stop);
}

static PyMethodDef FixedDecoder_methods[] = {
    {"decode", (PyCFunction)(void (*)(void))FixedDecoder_decode, METH_FASTCALL,
     "decode(data, out) -> bytes consumed; frames are appended to out"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef FixedDecoder_members[] = {
    {"frameLength", T_PYSSIZET, offsetof(FixedDecoder, frameLength), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject FixedDecoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "iocpsvc._speedups.FixedDecoder",
    .tp_basicsize = sizeof(FixedDecoder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "The framing loop of fixed.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)FixedDecoder_init,
    .tp_methods = FixedDecoder_methods,
    .tp_members = FixedDecoder_members,
};

/* ------------------------------------------------------------------------ */
/* FrameEncoder: the built-in framers' encoders, one object at a time       */
/* (encode) or a read's writes together (newBatch).                         */

enum {
    ENC_LENGTH = 0,
    ENC_HPSOCKET = 1,
    ENC_DIOCP = 2,
    ENC_LINE = 3,
    ENC_DELIMITER = 4,
    ENC_NETSTRING = 5,
    ENC_FIXED = 6,
};

typedef struct {
    PyObject_HEAD
    int kind;
    int fieldSize;
    int bigEndian;
    long long adjust;
    uint64_t limit;         /* length: the largest field value */
    Py_ssize_t maxLength;   /* hpsocket, diocp: the longest payload; fixed: the size */
    uint32_t flagBits;      /* hpsocket */
    PyObject *trailer;      /* line: the eol; delimiter: the delimiter (bytes) */
} FrameEncoder;

static int
FrameEncoder_init(FrameEncoder *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"kind", "fieldSize", "bigEndian", "adjust", "limit",
                             "maxLength", "flagBits", "trailer", NULL};
    unsigned long long limit = 0;
    unsigned long flagBits = 0;
    PyObject *trailer = NULL;
    self->fieldSize = 4;
    self->bigEndian = 1;
    self->adjust = 0;
    self->maxLength = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i|ipLKnkO!", kwlist, &self->kind, &self->fieldSize,
                                     &self->bigEndian, &self->adjust, &limit, &self->maxLength, &flagBits,
                                     &PyBytes_Type, &trailer))
        return -1;
    if (self->kind < ENC_LENGTH || self->kind > ENC_FIXED || self->fieldSize < 1 || self->fieldSize > 8 ||
        ((self->kind == ENC_LINE || self->kind == ENC_DELIMITER) &&
         (trailer == NULL || PyBytes_GET_SIZE(trailer) == 0))) {
        PyErr_SetString(PyExc_ValueError, "bad FrameEncoder parameters");
        return -1;
    }
    self->limit = (uint64_t)limit;
    self->flagBits = (uint32_t)flagBits;
    Py_XINCREF(trailer);
    Py_XSETREF(self->trailer, trailer);
    return 0;
}

static void
FrameEncoder_dealloc(FrameEncoder *self)
{
    Py_XDECREF(self->trailer);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Whether the delimiter codec's decoder would find `delim` in payload +
   delim before the appended one. */
static int
runsIntoDelimiter(const char *p, Py_ssize_t n, const char *delim, Py_ssize_t dl)
{
    if (findDelimiter(p, 0, n, delim, dl) >= 0)
        return 1;
    Py_ssize_t k;
    /* payload's last k bytes + the delimiter's first dl - k bytes form the
       delimiter */
    for (k = 1; k < dl && k <= n; k++) {
        if (memcmp(p + n - k, delim, (size_t)k) == 0 && memcmp(delim, delim + k, (size_t)(dl - k)) == 0)
            return 1;
    }
    return 0;
}

/*
 * How many bytes frame(payload) takes on the wire, or -1 if this payload
 * is not one the compiled encoder frames itself (the pure encoder then
 * encodes it, or refuses it with its own words).
 */
static Py_ssize_t
framedSize(FrameEncoder *self, PyObject *obj)
{
    if (!PyBytes_CheckExact(obj))
        return -1;
    Py_ssize_t n = PyBytes_GET_SIZE(obj);
    const char *p = PyBytes_AS_STRING(obj);
    switch (self->kind) {
    case ENC_LENGTH: {
        long long value = (long long)n - self->adjust;
        if (value < 0 || (uint64_t)value > self->limit)
            return -1;
        return self->fieldSize + n;
    }
    case ENC_HPSOCKET:
        if (n == 0 || n > self->maxLength)
            return -1;
        return 4 + n;
    case ENC_DIOCP:
        if (n > self->maxLength)
            return -1;
        return 10 + n;
    case ENC_LINE:
        if (memchr(p, '\n', (size_t)n) != NULL)
            return -1;
        /* A payload ending with CR always gets CRLF (the decoder removes one CR). */
        if (n > 0 && p[n - 1] == '\r')
            return n + 2;
        return n + PyBytes_GET_SIZE(self->trailer);
    case ENC_DELIMITER:
        if (runsIntoDelimiter(p, n, PyBytes_AS_STRING(self->trailer), PyBytes_GET_SIZE(self->trailer)))
            return -1;
        return n + PyBytes_GET_SIZE(self->trailer);
    case ENC_NETSTRING: {
        Py_ssize_t digits = 1, v = n;
        while (v >= 10) {
            v /= 10;
            digits++;
        }
        return digits + 1 + n + 1;
    }
    case ENC_FIXED:
        if (n != self->maxLength)
            return -1;
        return n;
    }
    return -1;
}

/* Write the frame of payload (whose framedSize is `size`) at `dest`. */
static void
writeFrame(FrameEncoder *self, PyObject *obj, Py_ssize_t size, unsigned char *dest)
{
    Py_ssize_t n = PyBytes_GET_SIZE(obj);
    const char *p = PyBytes_AS_STRING(obj);
    switch (self->kind) {
    case ENC_LENGTH:
        writeUnsigned(dest, (uint64_t)((long long)n - self->adjust), self->fieldSize, self->bigEndian);
        memcpy(dest + self->fieldSize, p, (size_t)n);
        return;
    case ENC_HPSOCKET:
        writeUnsigned(dest, (uint64_t)(self->flagBits | (uint32_t)n), 4, 0);
        memcpy(dest + 4, p, (size_t)n);
        return;
    case ENC_DIOCP:
        dest[0] = 0x10;
        dest[1] = 0x0D;
        writeUnsigned(dest + 2, byteSum((const unsigned char *)p, n), 4, 0);
        writeUnsigned(dest + 6, (uint64_t)n, 4, 1);
        memcpy(dest + 10, p, (size_t)n);
        return;
    case ENC_LINE:
    case ENC_DELIMITER:
        memcpy(dest, p, (size_t)n);
        if (self->kind == ENC_LINE && size == n + 2) {
            dest[n] = '\r';
            dest[n + 1] = '\n';
        } else {
            memcpy(dest + n, PyBytes_AS_STRING(self->trailer), (size_t)(size - n));
        }
        return;
    case ENC_NETSTRING: {
        Py_ssize_t digits = size - n - 2, v = n, i;
        for (i = digits - 1; i >= 0; i--) {
            dest[i] = (unsigned char)('0' + v % 10);
            v /= 10;
        }
        dest[digits] = ':';
        memcpy(dest + digits + 1, p, (size_t)n);
        dest[size - 1] = ',';
        return;
    }
    case ENC_FIXED:
        memcpy(dest, p, (size_t)n);
        return;
    }
}

/* What the pure-Python encoder makes of obj, as one bytes (its chunks joined). */
static PyObject *
slowEncode(PyObject *self, PyObject *obj)
{
    PyObject *encoded = PyObject_CallMethodOneArg(self, str_slowEncode, obj);
    if (encoded == NULL || PyBytes_CheckExact(encoded))
        return encoded;
    static PyObject *emptyBytes = NULL;
    if (emptyBytes == NULL && (emptyBytes = PyBytes_FromStringAndSize(NULL, 0)) == NULL) {
        Py_DECREF(encoded);
        return NULL;
    }
    PyObject *joined = PyObject_CallMethod(emptyBytes, "join", "O", encoded);
    Py_DECREF(encoded);
    return joined;
}

static PyObject *
FrameEncoder_encode(FrameEncoder *self, PyObject *obj)
{
    Py_ssize_t size = framedSize(self, obj);
    if (size < 0)
        return slowEncode((PyObject *)self, obj);
    PyObject *result = PyBytes_FromStringAndSize(NULL, size);
    if (result == NULL)
        return NULL;
    writeFrame(self, obj, size, (unsigned char *)PyBytes_AS_STRING(result));
    return result;
}

static PyObject *FrameEncoder_newBatch(FrameEncoder *self, PyObject *unused);

static PyMethodDef FrameEncoder_methods[] = {
    {"encode", (PyCFunction)FrameEncoder_encode, METH_O, "encode(obj) -> bytes: obj framed"},
    {"newBatch", (PyCFunction)FrameEncoder_newBatch, METH_NOARGS,
     "newBatch() -> a Batch: writes framed together when it is taken"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject FrameEncoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "iocpsvc._speedups.FrameEncoder",
    .tp_basicsize = sizeof(FrameEncoder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "The built-in framers' encoders, with batches.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)FrameEncoder_init,
    .tp_dealloc = (destructor)FrameEncoder_dealloc,
    .tp_methods = FrameEncoder_methods,
};

/* ------------------------------------------------------------------------ */
/* Batch: what one read's dispatch writes, in order.  add(obj) checks obj   */
/* at once (an object the batch cannot frame is encoded at once by the pure */
/* encoder, raising EncodeError there); take() frames everything into one   */
/* bytes, in one pass.  append/extend take bytes already encoded, as a list */
/* does (writeBytes, writeEncoded).                                         */

typedef struct {
    PyObject_HEAD
    FrameEncoder *encoder;
    PyObject **items;
    Py_ssize_t *sizes; /* framed size, or -1 for bytes taken as they are */
    Py_ssize_t count;
    Py_ssize_t capacity;
    Py_ssize_t total;
    PyObject *inline_items[8]; /* most reads write a few objects: no allocation */
    Py_ssize_t inline_sizes[8];
} Batch;

static void
Batch_clear(Batch *self)
{
    Py_ssize_t i;
    for (i = 0; i < self->count; i++)
        Py_DECREF(self->items[i]);
    self->count = 0;
    self->total = 0;
}

static void
Batch_dealloc(Batch *self)
{
    Batch_clear(self);
    if (self->items != self->inline_items) {
        PyMem_Free(self->items);
        PyMem_Free(self->sizes);
    }
    Py_XDECREF(self->encoder);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
Batch_push(Batch *self, PyObject *item, Py_ssize_t size)
{
    if (self->count == self->capacity) {
        Py_ssize_t capacity = self->capacity * 2;
        PyObject **items;
        Py_ssize_t *sizes;
        if (self->items == self->inline_items) {
            items = PyMem_Malloc(sizeof(PyObject *) * (size_t)capacity);
            sizes = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)capacity);
            if (items == NULL || sizes == NULL) {
                PyMem_Free(items);
                PyMem_Free(sizes);
                PyErr_NoMemory();
                return -1;
            }
            memcpy(items, self->items, sizeof(PyObject *) * (size_t)self->count);
            memcpy(sizes, self->sizes, sizeof(Py_ssize_t) * (size_t)self->count);
        } else {
            items = PyMem_Realloc(self->items, sizeof(PyObject *) * (size_t)capacity);
            if (items == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            self->items = items;
            sizes = PyMem_Realloc(self->sizes, sizeof(Py_ssize_t) * (size_t)capacity);
            if (sizes == NULL) {
                PyErr_NoMemory();
                return -1;
            }
        }
        self->items = items;
        self->sizes = sizes;
        self->capacity = capacity;
    }
    Py_INCREF(item);
    self->items[self->count] = item;
    self->sizes[self->count] = size;
    self->count++;
    self->total += size < 0 ? PyBytes_GET_SIZE(item) : size;
    return 0;
}

static PyObject *
Batch_add(Batch *self, PyObject *obj)
{
    Py_ssize_t size = framedSize(self->encoder, obj);
    if (size >= 0) {
        if (Batch_push(self, obj, size) < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    PyObject *encoded = slowEncode((PyObject *)self->encoder, obj);
    if (encoded == NULL)
        return NULL;
    int rc = Batch_push(self, encoded, -1);
    Py_DECREF(encoded);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
Batch_append(Batch *self, PyObject *chunk)
{
    if (PyBytes_Check(chunk)) {
        if (Batch_push(self, chunk, -1) < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    /* Any other bytes-like object (bytearray, memoryview) is copied now,
       as the bytes it holds at the time of the write. */
    PyObject *copy = PyBytes_FromObject(chunk);
    if (copy == NULL)
        return NULL;
    int rc = Batch_push(self, copy, -1);
    Py_DECREF(copy);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
Batch_extend(Batch *self, PyObject *chunks)
{
    PyObject *iterator = PyObject_GetIter(chunks);
    if (iterator == NULL)
        return NULL;
    PyObject *chunk;
    while ((chunk = PyIter_Next(iterator)) != NULL) {
        PyObject *result = Batch_append(self, chunk);
        Py_DECREF(chunk);
        if (result == NULL) {
            Py_DECREF(iterator);
            return NULL;
        }
        Py_DECREF(result);
    }
    Py_DECREF(iterator);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
Batch_take(Batch *self, PyObject *unused)
{
    PyObject *result;
    if (self->count == 1 && self->sizes[0] < 0) {
        /* One chunk already encoded: no copy. */
        result = self->items[0];
        Py_INCREF(result);
        Batch_clear(self);
        return result;
    }
    result = PyBytes_FromStringAndSize(NULL, self->total);
    if (result == NULL)
        return NULL;
    unsigned char *dest = (unsigned char *)PyBytes_AS_STRING(result);
    Py_ssize_t i;
    for (i = 0; i < self->count; i++) {
        PyObject *item = self->items[i];
        Py_ssize_t size = self->sizes[i];
        if (size < 0) {
            size = PyBytes_GET_SIZE(item);
            memcpy(dest, PyBytes_AS_STRING(item), (size_t)size);
        } else {
            writeFrame(self->encoder, item, size, dest);
        }
        dest += size;
    }
    Batch_clear(self);
    return result;
}

static Py_ssize_t
Batch_length(Batch *self)
{
    return self->count;
}

static PyMethodDef Batch_methods[] = {
    {"add", (PyCFunction)Batch_add, METH_O, "add(obj): an object to frame (EncodeError now if it cannot be)"},
    {"append", (PyCFunction)Batch_append, METH_O, "append(chunk): bytes already encoded, sent as they are"},
    {"extend", (PyCFunction)Batch_extend, METH_O, "extend(chunks): append each chunk"},
    {"take", (PyCFunction)Batch_take, METH_NOARGS, "take() -> bytes: everything, framed, in order; empties it"},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods Batch_as_sequence = {
    .sq_length = (lenfunc)Batch_length,
};

static PyMemberDef Batch_members[] = {
    {"size", T_PYSSIZET, offsetof(Batch, total), READONLY, "bytes take() will return"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject BatchType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "iocpsvc._speedups.Batch",
    .tp_basicsize = sizeof(Batch),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One read's writes, framed together when taken.",
    .tp_dealloc = (destructor)Batch_dealloc,
    .tp_methods = Batch_methods,
    .tp_members = Batch_members,
    .tp_as_sequence = &Batch_as_sequence,
};

static PyObject *
FrameEncoder_newBatch(FrameEncoder *self, PyObject *unused)
{
    Batch *batch = PyObject_New(Batch, &BatchType);
    if (batch == NULL)
        return NULL;
    Py_INCREF(self);
    batch->encoder = self;
    batch->items = batch->inline_items;
    batch->sizes = batch->inline_sizes;
    batch->count = 0;
    batch->capacity = 8;
    batch->total = 0;
    return (PyObject *)batch;
}

/* ------------------------------------------------------------------------ */

static struct PyModuleDef speedupsModule = {
    PyModuleDef_HEAD_INIT,
    .m_name = "iocpsvc._speedups",
    .m_doc = "The compiled accelerator of iocpsvc's hot path (see iocpsvc.accel).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    str_slowDecode = PyUnicode_InternFromString("_slowDecode");
    str_slowEncode = PyUnicode_InternFromString("_slowEncode");
    if (str_slowDecode == NULL || str_slowEncode == NULL)
        return NULL;
    PyTypeObject *types[] = {&HeaderDecoderType, &DelimitedDecoderType, &NetstringDecoderType,
                             &FixedDecoderType, &FrameEncoderType, &BatchType};
    size_t i;
    for (i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        if (PyType_Ready(types[i]) < 0)
            return NULL;
    }
    PyObject *module = PyModule_Create(&speedupsModule);
    if (module == NULL)
        return NULL;
    for (i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        const char *name = strrchr(types[i]->tp_name, '.') + 1;
        Py_INCREF(types[i]);
        if (PyModule_AddObject(module, name, (PyObject *)types[i]) < 0) {
            Py_DECREF(types[i]);
            Py_DECREF(module);
            return NULL;
        }
    }
    if (PyModule_AddIntConstant(module, "ENC_LENGTH", ENC_LENGTH) < 0 ||
        PyModule_AddIntConstant(module, "ENC_HPSOCKET", ENC_HPSOCKET) < 0 ||
        PyModule_AddIntConstant(module, "ENC_DIOCP", ENC_DIOCP) < 0 ||
        PyModule_AddIntConstant(module, "ENC_LINE", ENC_LINE) < 0 ||
        PyModule_AddIntConstant(module, "ENC_DELIMITER", ENC_DELIMITER) < 0 ||
        PyModule_AddIntConstant(module, "ENC_NETSTRING", ENC_NETSTRING) < 0 ||
        PyModule_AddIntConstant(module, "ENC_FIXED", ENC_FIXED) < 0 ||
        PyModule_AddIntConstant(module, "KIND_LENGTH", KIND_LENGTH) < 0 ||
        PyModule_AddIntConstant(module, "KIND_HPSOCKET", KIND_HPSOCKET) < 0 ||
        PyModule_AddIntConstant(module, "KIND_DIOCP", KIND_DIOCP) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
