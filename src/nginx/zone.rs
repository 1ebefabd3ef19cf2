//! Shared-memory zones (one region seen by every worker): nginx maps the zone, we take one big
//! zeroed, page-aligned block from its slab allocator and hand the plain-Rust code a
//! `&'static [AtomicU64]` view of it. All cross-process logic (tables, locks) lives in
//! `crate::shm`, `crate::cache` and `crate::limiter`.
//! Hand-written: ngx's `SlabPool` allocates by `Layout`, not "every free page at once", and has
//! no zone registration (ngx_shared_memory_add, the tag check) or init callback.

use std::ffi::c_void;
use std::sync::atomic::AtomicU64;

use ngx::ffi::{
    ngx_conf_t, ngx_int_t, ngx_shared_memory_add, ngx_shm_zone_t, ngx_slab_calloc, ngx_slab_pool_t, NGX_ERROR, NGX_OK,
};

/// A zone registered at configuration time. The region exists only after nginx initialised the
/// zone (after configuration, before workers start).
#[derive(Clone, Copy)]
pub struct Zone(*mut ngx_shm_zone_t);

// SAFETY: the zone struct is allocated in the cycle pool and is only written by nginx during
// configuration/initialisation (single-threaded, before workers exist); afterwards it is read
// only. The region it points to is accessed exclusively through atomics.
unsafe impl Send for Zone {}
// SAFETY: see above.
unsafe impl Sync for Zone {}

/// Registers `name` with `size` bytes, tagged with this module so that two of our directives
/// cannot silently share a zone with different meanings (`tag` distinguishes the users).
pub fn add(cf: *mut ngx_conf_t, name: &str, size: usize, tag: *mut c_void) -> Result<Zone, String> {
    // SAFETY: cf is live during configuration; the name is copied into the cycle pool first.
    unsafe {
        let mut n = ngx::ffi::ngx_str_t::from_bytes((*cf).pool, name.as_bytes()).ok_or("out of memory")?;
        let z = ngx_shared_memory_add(cf, &mut n, size, tag);
        if z.is_null() {
            return Err(format!("cannot add shared memory zone \"{name}\""));
        }
        if !(*z).data.is_null() {
            return Err(format!("shared memory zone \"{name}\" is already used"));
        }
        (*z).init = Some(init_zone);
        // Non-null marks the zone as taken by a directive until init replaces it with the region.
        (*z).data = z as *mut c_void;
        Ok(Zone(z))
    }
}

/// Registers `name` once per configuration for several directives that share it (the status
/// counters): the first call adds the zone, later ones get the same zone back.
pub fn shared(cf: *mut ngx_conf_t, name: &str, size: usize, tag: *mut c_void) -> Result<Zone, String> {
    // SAFETY: as in `add`; nginx returns the zone already registered under this name and tag
    // (a different size or tag is its own configuration error).
    unsafe {
        let mut n = ngx::ffi::ngx_str_t::from_bytes((*cf).pool, name.as_bytes()).ok_or("out of memory")?;
        let z = ngx_shared_memory_add(cf, &mut n, size, tag);
        if z.is_null() {
            return Err(format!("cannot add shared memory zone \"{name}\""));
        }
        if (*z).data.is_null() {
            (*z).init = Some(init_zone);
            (*z).data = z as *mut c_void;
        } else if (*z).data != z as *mut c_void {
            return Err(format!("shared memory zone \"{name}\" is already used"));
        }
        Ok(Zone(z))
    }
}

#[repr(C)]
struct RegionHeader {
    ptr: *mut u8,
    len: usize,
}

/// nginx calls this once the zone is mapped. `old` is the previous cycle's data when the zone
/// survives a reload (same name, size and tag): then we keep the existing region and its
/// content (cached verdicts, limiter counters).
unsafe extern "C" fn init_zone(zone: *mut ngx_shm_zone_t, old: *mut c_void) -> ngx_int_t {
    super::guard(NGX_ERROR as ngx_int_t, || {
        // SAFETY: nginx passes the zone it mapped; its shm.addr starts with the slab pool header
        // nginx initialised (ngx_init_zone_pool) before calling us.
        unsafe {
            if !old.is_null() {
                (*zone).data = old;
                return NGX_OK as ngx_int_t;
            }
            let sp = (*zone).shm.addr as *mut ngx_slab_pool_t;
            if (*zone).shm.exists != 0 {
                (*zone).data = (*sp).data;
                return NGX_OK as ngx_int_t;
            }
            let hdr = ngx_slab_calloc(sp, std::mem::size_of::<RegionHeader>()) as *mut RegionHeader;
            if hdr.is_null() {
                return NGX_ERROR as ngx_int_t;
            }
            // Take all remaining free pages as one block (a fresh pool's free pages are
            // contiguous); fall back to smaller blocks if the allocator disagrees.
            let page = ngx::ffi::ngx_pagesize;
            let mut pages = (*sp).pfree;
            let mut region = std::ptr::null_mut();
            (*sp).set_log_nomem(0);
            while pages > 0 {
                region = ngx_slab_calloc(sp, pages * page);
                if !region.is_null() {
                    break;
                }
                pages -= 1;
            }
            (*sp).set_log_nomem(1);
            if region.is_null() {
                return NGX_ERROR as ngx_int_t;
            }
            hdr.write(RegionHeader { ptr: region as *mut u8, len: pages * page });
            (*sp).data = hdr as *mut c_void;
            (*zone).data = hdr as *mut c_void;
            NGX_OK as ngx_int_t
        }
    })
}

impl Zone {
    /// The zone's region as 64-bit atomics, or `None` before nginx initialised the zone.
    pub fn words(&self) -> Option<&'static [AtomicU64]> {
        // SAFETY: after init_zone, data points to our RegionHeader in the shared mapping, which
        // stays mapped at the same address in every worker for the process's life. The region
        // is page-aligned (>= 8-byte alignment for AtomicU64), zero-initialised by
        // ngx_slab_calloc, exclusively ours, and AtomicU64 has the size and alignment of u64;
        // all access goes through atomics, so shared references across processes are sound.
        unsafe {
            let data = (*self.0).data;
            if data.is_null() || data == self.0 as *mut c_void {
                return None;
            }
            let hdr = &*(data as *const RegionHeader);
            if hdr.ptr.is_null() || !(hdr.ptr as usize).is_multiple_of(std::mem::align_of::<AtomicU64>()) {
                return None;
            }
            Some(std::slice::from_raw_parts(hdr.ptr as *const AtomicU64, hdr.len / std::mem::size_of::<AtomicU64>()))
        }
    }
}
