//! Where things lie on a volume: the primary EMD at offset 0, the data area
//! from 1 MiB, the chunk index right after the data area, the backup EMD in
//! the last 16 KiB before the end (aligned down to 4 KiB), and at least
//! 1 MiB reserved at the tail for the last two, so that the two EMD copies
//! lie far apart.

use crate::emd::format::EMD_SIZE;

const MIB: u64 = 1024 * 1024;

/// Offset of the data area (1 MiB: aligned for dm-crypt and any sector size).
pub const DATA_OFFSET: u64 = MIB;
/// Space reserved at the end for the chunk index and the backup EMD copy,
/// at least (see [`tail_for`]).
pub const TAIL_RESERVE: u64 = MIB;
/// Smallest volume: EMD areas plus one MiB of data.
pub const MIN_VOLUME: u64 = DATA_OFFSET + MIB + TAIL_RESERVE;

/// Offset of the backup EMD copy on a device of `size` bytes.
pub fn backup_emd_offset(size: u64) -> Option<u64> {
    let end = size & !4095;
    end.checked_sub(EMD_SIZE as u64)
        .filter(|&off| off >= DATA_OFFSET)
}

/// Bytes the tail keeps after a data area of `data_size` bytes: the chunk
/// index of that data area and the backup EMD copy, with room to spare; at
/// least [`TAIL_RESERVE`], which holds the index of a data area of up to
/// about 14 GiB.
pub fn tail_for(data_size: u64) -> u64 {
    TAIL_RESERVE.max(crate::index::area_len(data_size) + TAIL_SPARE)
}

/// What a tail keeps beyond the chunk index: the backup EMD copy in the
/// last 16 KiB before the end (aligned down to 4 KiB), and more.
const TAIL_SPARE: u64 = 64 * 1024;

/// The largest data area a device of `size` bytes holds, in whole sectors,
/// with its tail (see [`tail_for`]).
pub fn max_data_size(size: u64, sector_size: u32) -> u64 {
    let ss = u64::from(sector_size);
    let room = (size & !4095).saturating_sub(DATA_OFFSET);
    let fits = |data: u64| data + tail_for(data) <= room;
    let data = room.saturating_sub(TAIL_RESERVE);
    if fits(data) {
        return data - data % ss;
    }
    // The index of a data area as large as the room is at least as large
    // as the index of the data area that fits: start below, and step up
    // (a few 4 KiB blocks of index at most).
    let mut data = room.saturating_sub(crate::index::area_len(room) + TAIL_SPARE);
    data -= data % ss;
    while fits(data + ss) {
        data += ss;
    }
    data
}

/// The device size needed for a data area of `data_size` bytes.
pub fn device_size_for(data_size: u64) -> u64 {
    DATA_OFFSET + data_size + tail_for(data_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_lie_outside_the_data_area() {
        for size in [
            MIN_VOLUME,
            64 * MIB,
            64 * MIB + 1234,
            16 << 30,
            (1 << 40) + 512,
        ] {
            let data = max_data_size(size, 4096);
            let backup = backup_emd_offset(size).unwrap();
            assert!(DATA_OFFSET + data <= backup, "{size}");
            assert!(backup + EMD_SIZE as u64 <= size);
            let index_end = DATA_OFFSET + data + crate::index::area_len(data);
            assert!(backup - index_end >= 32 * 1024, "{size}");
            assert!(device_size_for(data) <= size);
        }
        // Up to about 14 GiB, the index fits the 1 MiB tail.
        assert_eq!(max_data_size(64 * MIB, 4096), 62 * MIB);
        assert_eq!(device_size_for(62 * MIB), 64 * MIB);
        // 1 TiB of data: a 64 MiB index (64 bytes a chunk) and the spare.
        let tib = 1 << 40;
        assert_eq!(
            device_size_for(tib),
            MIB + tib + 64 * MIB + 4096 + 64 * 1024
        );
        assert_eq!(max_data_size(device_size_for(tib), 4096), tib);
        assert_eq!(max_data_size(100, 512), 0);
        assert_eq!(backup_emd_offset(100), None);
    }
}
