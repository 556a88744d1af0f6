/* The portable tile's vector operations on one `real` lane (ukernel.c
 * includes this before each portable instantiation of ukernel_body.h). */
#define VZERO() ((real)0)
#define VLOAD(p) (*(p))
#define VLOADM(p, n) ((n) > 0 ? *(p) : 0)
#define VSTORE(p, v) (*(p) = (v))
#define VFMA(a, b, c) ((a) * (b) + (c))
#define VBCAST(p) (*(p))
#define VADD(a, b) ((a) + (b))
