/* Exit 0 when Intel AMX tiles run here: the CPU advertises them, the kernel grants the tile
   state (arch_prctl ARCH_REQ_XCOMP_PERM) and the hypervisor really enables it. Some virtual
   machines pass the first two and trap the first tile instruction (SIGILL): scripts/setup.sh
   then builds llama.cpp without AMX. */
#include <immintrin.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

int main(void) {
    unsigned char config[64];
    if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0) return 1;
    memset(config, 0, sizeof config);
    config[0] = 1;   /* palette 1 */
    config[16] = 64; /* tile 0: 64 bytes a row */
    config[48] = 16; /* tile 0: 16 rows */
    _tile_loadconfig(config);
    _tile_zero(0);
    _tile_release();
    return 0;
}
