//! Where things lie on a volume: the primary EMD at offset 0, the data area
//! from 1 MiB, the backup EMD in the last 16 KiB before the end (aligned down
//! to 4 KiB), and 1 MiB reserved at the tail so the two copies lie far apart.

use crate::emd::format::EMD_SIZE;

const MIB: u64 = 1024 * 1024;

/// Offset of the data area (1 MiB: aligned for dm-crypt and any sector size).
pub const DATA_OFFSET: u64 = MIB;
/// Space reserved at the end for the backup EMD copy.
pub const TAIL_RESERVE: u64 = MIB;
/// Smallest volume: EMD areas plus one MiB of data.
pub const MIN_VOLUME: u64 = DATA_OFFSET + MIB + TAIL_RESERVE;

/// Offset of the backup EMD copy on a device of `size` bytes.
pub fn backup_emd_offset(size: u64) -> Option<u64> {
    let end = size & !4095;
    end.checked_sub(EMD_SIZE as u64)
        .filter(|&off| off >= DATA_OFFSET)
}

/// The largest data area a device of `size` bytes holds, in whole sectors.
pub fn max_data_size(size: u64, sector_size: u32) -> u64 {
    let room = (size & !4095).saturating_sub(DATA_OFFSET + TAIL_RESERVE);
    room - room % u64::from(sector_size)
}

/// The device size needed for a data area of `data_size` bytes.
pub fn device_size_for(data_size: u64) -> u64 {
    DATA_OFFSET + data_size + TAIL_RESERVE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_lie_outside_the_data_area() {
        for size in [MIN_VOLUME, 64 * MIB, 64 * MIB + 1234, (1 << 40) + 512] {
            let data = max_data_size(size, 4096);
            let backup = backup_emd_offset(size).unwrap();
            assert!(DATA_OFFSET + data <= backup, "{size}");
            assert!(backup + EMD_SIZE as u64 <= size);
            assert!(backup - (DATA_OFFSET + data) >= MIB - 4096 - EMD_SIZE as u64);
            assert!(device_size_for(data) <= size);
        }
        assert_eq!(max_data_size(64 * MIB, 4096), 62 * MIB);
        assert_eq!(max_data_size(100, 512), 0);
        assert_eq!(backup_emd_offset(100), None);
    }
}
