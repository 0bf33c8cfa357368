/* JPEG decoding through the system libjpeg(-turbo), exactly as Pillow decodes: default
 * (islow) IDCT, fancy upsampling, grey replicated to RGB, CMYK/YCCK converted with Pillow's
 * formula (Adobe files inverted first). Errors come back as text, never as a process exit. */
#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <jpeglib.h>
#include <jerror.h>

struct err_mgr {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    int truncated;
    char msg[JMSG_LENGTH_MAX];
};

static void on_error(j_common_ptr cinfo) {
    struct err_mgr *e = (struct err_mgr *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, e->msg);
    longjmp(e->jb, 1);
}

static void on_message(j_common_ptr cinfo, int level) {
    struct err_mgr *e = (struct err_mgr *)cinfo->err;
    /* Warnings about extraneous bytes are common in valid files (Pillow ignores them);
     * premature end of data means the file is truncated. */
    if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) e->truncated = 1;
}

static void copy_msg(char *dst, int dst_len, const char *src) {
    if (dst_len <= 0) return;
    strncpy(dst, src, (size_t)dst_len - 1);
    dst[dst_len - 1] = 0;
}

/* Reads the header: width, height. Returns 0 on success. */
int tlfx_jpeg_info(const unsigned char *data, unsigned long len, int *w, int *h, char *err, int err_len) {
    struct jpeg_decompress_struct cinfo;
    struct err_mgr jerr;
    memset(&jerr, 0, sizeof jerr);
    cinfo.err = jpeg_std_error(&jerr.pub);
    jerr.pub.error_exit = on_error;
    jerr.pub.emit_message = on_message;
    if (setjmp(jerr.jb)) {
        copy_msg(err, err_len, jerr.msg);
        jpeg_destroy_decompress(&cinfo);
        return 1;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, (unsigned char *)data, len);
    jpeg_read_header(&cinfo, TRUE);
    *w = (int)cinfo.image_width;
    *h = (int)cinfo.image_height;
    jpeg_destroy_decompress(&cinfo);
    return 0;
}

#define MULDIV255(a, b, tmp) (tmp = (a) * (b) + 128, ((((tmp) >> 8) + (tmp)) >> 8))
#define CLIP8(v) ((v) <= 0 ? 0 : (v) < 256 ? (v) : 255)

/* Decodes into `out` (w*h*3 bytes, RGB). Returns 0 on success. */
int tlfx_jpeg_decode(const unsigned char *data, unsigned long len, unsigned char *out, unsigned long out_len,
                     char *err, int err_len) {
    struct jpeg_decompress_struct cinfo;
    struct err_mgr jerr;
    JSAMPARRAY row = NULL;
    memset(&jerr, 0, sizeof jerr);
    cinfo.err = jpeg_std_error(&jerr.pub);
    jerr.pub.error_exit = on_error;
    jerr.pub.emit_message = on_message;
    if (setjmp(jerr.jb)) {
        copy_msg(err, err_len, jerr.msg);
        jpeg_destroy_decompress(&cinfo);
        return 1;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, (unsigned char *)data, len);
    jpeg_read_header(&cinfo, TRUE);
    int cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
    int grey = cinfo.jpeg_color_space == JCS_GRAYSCALE;
    cinfo.out_color_space = cmyk ? JCS_CMYK : grey ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_start_decompress(&cinfo);
    unsigned long w = cinfo.output_width, h = cinfo.output_height;
    if (w * h * 3 != out_len) {
        copy_msg(err, err_len, "output buffer does not match the image size");
        jpeg_destroy_decompress(&cinfo);
        return 1;
    }
    int comps = cinfo.output_components;
    row = (*cinfo.mem->alloc_sarray)((j_common_ptr)&cinfo, JPOOL_IMAGE, (JDIMENSION)(w * comps), 1);
    int invert = cmyk && cinfo.saw_Adobe_marker;
    while (cinfo.output_scanline < h) {
        unsigned long y = cinfo.output_scanline;
        jpeg_read_scanlines(&cinfo, row, 1);
        unsigned char *src = row[0], *dst = out + y * w * 3;
        if (comps == 3) {
            memcpy(dst, src, w * 3);
        } else if (comps == 1) {
            for (unsigned long x = 0; x < w; x++) dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = src[x];
        } else {
            for (unsigned long x = 0; x < w; x++) {
                int c[4], tmp;
                for (int k = 0; k < 4; k++) c[k] = invert ? 255 - src[4 * x + k] : src[4 * x + k];
                int nk = 255 - c[3];
                for (int k = 0; k < 3; k++) dst[3 * x + k] = (unsigned char)CLIP8(nk - MULDIV255(c[k], nk, tmp));
            }
        }
        if (jerr.truncated) break;
    }
    if (jerr.truncated) {
        copy_msg(err, err_len, "premature end of JPEG data (truncated file)");
        jpeg_destroy_decompress(&cinfo);
        return 1;
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    return 0;
}
